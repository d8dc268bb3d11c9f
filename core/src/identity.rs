//! Who is asking, and what they may do.
//!
//! Every request has a [`Caller`]: a signed-in person ([`Caller::User`], with a [`Role`]), one
//! of Agora's own components acting for itself ([`Caller::Service`]: the exchange paying a
//! seller, the bank calling the ledger, operators' tools on the services' side), or a
//! connection that has not signed in ([`Caller::Anonymous`]: it may only sign up). The shell
//! learns the caller from the NATS server (the account and user name it stamps on a request
//! that crossed from the users' account) or from the gateway's session, never from a payload
//! field; these are only the rules.
//!
//! A user acts on their own things only: their account's money, their orders, tasks, likes
//! and chat name. A payload may still name them (old clients do), but naming anyone else is
//! [`IdentityError::NotYours`]. A manager is a user with the manager's extra operations (coin
//! listings, uploads, users' roles), not a superuser: a manager moves no one else's money. A
//! service acts on whatever it names.

use std::fmt;

/// Longest user name, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 32;

/// The owner recorded for what a service (not a person) creates, such as a task submitted by
/// a tool. No user can have this name: a user name starts with a letter or digit.
pub const SERVICE_OWNER: &str = "_agora";

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "a user name is 1-{USER_NAME_BYTES_MAX} characters of [A-Za-z0-9_-] starting with a \
         letter or digit, not {0:?}"
    )]
    InvalidName(String),
    #[error("{0:?} is reserved")]
    Reserved(String),
    #[error("a role is user or manager, not {0:?}")]
    InvalidRole(String),
    /// The request names someone else's thing.
    #[error("{what} {named:?} is not yours (you are {caller})")]
    NotYours { what: &'static str, named: String, caller: String },
    /// The operation needs the manager's role.
    #[error("{0} needs the manager's role")]
    ManagerOnly(&'static str),
    /// The operation is for signed-in people, not for services.
    #[error("{0} needs a signed-in user")]
    UserOnly(&'static str),
    /// The operation is for Agora's own components.
    #[error("{0} is for Agora's own services")]
    ServiceOnly(&'static str),
    /// An anonymous connection may only sign up.
    #[error("sign in first ({0} needs a user)")]
    SignInFirst(&'static str),
}

/// A user's name: 1 to 32 characters of `[A-Za-z0-9_-]`, the first a letter or digit. It is
/// also the user's bank account, chat name and likes user, and one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let valid = crate::token::is_word(text, USER_NAME_BYTES_MAX)
            && text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdentityError::InvalidName(text.chars().take(64).collect()))
        }
    }

    /// A name for a new user: valid, and not one of `reserved` (compared without case, so
    /// `Exchange` cannot pass for `exchange` in a reader's eye).
    pub fn parse_new(text: &str, reserved: &[String]) -> Result<Self, IdentityError> {
        let name = Self::parse(text)?;
        if reserved.iter().any(|r| r.eq_ignore_ascii_case(text)) {
            return Err(IdentityError::Reserved(text.to_owned()));
        }
        Ok(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do beyond their own things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    /// Lists coins, uploads files, reads the logs, changes users' roles.
    Manager,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::User, Role::Manager];

    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| IdentityError::InvalidRole(text.chars().take(32).collect()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Manager => "manager",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User { name: UserName, role: Role },
    Service,
    Anonymous,
}

impl Caller {
    pub fn user(name: UserName, role: Role) -> Self {
        Self::User { name, role }
    }

    /// The signed-in user's name, if a person asks.
    pub fn name(&self) -> Option<&UserName> {
        match self {
            Self::User { name, .. } => Some(name),
            Self::Service | Self::Anonymous => None,
        }
    }

    /// Refuses an anonymous caller (everything but signing up needs a user or a service).
    pub fn signed_in(&self, what: &'static str) -> Result<(), IdentityError> {
        match self {
            Self::Anonymous => Err(IdentityError::SignInFirst(what)),
            _ => Ok(()),
        }
    }

    pub fn is_manager(&self) -> bool {
        matches!(self, Self::User { role: Role::Manager, .. })
    }

    /// Who owns what this caller creates: the user, or [`SERVICE_OWNER`] (check
    /// [`Self::signed_in`] first: an anonymous caller creates nothing).
    pub fn owner(&self) -> &str {
        self.name().map_or(SERVICE_OWNER, UserName::as_str)
    }

    /// The one `what` (an account, an order's user, a chat name) a request acts on: for a
    /// user, their own (`named` may repeat it, or be left out); for a service, the one it
    /// names, or none.
    pub fn acting_as<'a>(
        &'a self,
        what: &'static str,
        named: Option<&'a str>,
    ) -> Result<Option<&'a str>, IdentityError> {
        match (self, named) {
            (Self::User { name, .. }, Some(named)) if named != name.as_str() => {
                Err(IdentityError::NotYours {
                    what,
                    named: named.chars().take(64).collect(),
                    caller: name.to_string(),
                })
            }
            (Self::User { name, .. }, _) => Ok(Some(name.as_str())),
            (Self::Service, named) => Ok(named),
            (Self::Anonymous, _) => Err(IdentityError::SignInFirst(what)),
        }
    }

    /// Like [`Self::acting_as`], for a request that must act on someone.
    pub fn acting_on<'a>(
        &'a self,
        what: &'static str,
        named: Option<&'a str>,
    ) -> Result<&'a str, IdentityError> {
        self.acting_as(what, named)?.ok_or(IdentityError::UserOnly(what))
    }

    /// Whether this caller may read what `owner` owns (a balance, an order, a task): its owner,
    /// a manager, or a service.
    pub fn may_read(&self, what: &'static str, owner: &str) -> Result<(), IdentityError> {
        match self {
            Self::Anonymous => Err(IdentityError::SignInFirst(what)),
            Self::User { name, role } if *role != Role::Manager && name.as_str() != owner => {
                Err(IdentityError::NotYours {
                    what,
                    named: owner.chars().take(64).collect(),
                    caller: name.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether this caller may change what `owner` owns (cancel a task, end a chat session):
    /// its owner, or a service; not a manager acting on someone else's.
    pub fn may_change(&self, what: &'static str, owner: &str) -> Result<(), IdentityError> {
        match self {
            Self::Anonymous => Err(IdentityError::SignInFirst(what)),
            Self::User { name, .. } if name.as_str() != owner => Err(IdentityError::NotYours {
                what,
                named: owner.chars().take(64).collect(),
                caller: name.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Managers' operations: a manager, or a service.
    pub fn require_manager(&self, what: &'static str) -> Result<(), IdentityError> {
        match self {
            Self::User { role: Role::User, .. } => Err(IdentityError::ManagerOnly(what)),
            Self::Anonymous => Err(IdentityError::SignInFirst(what)),
            Self::User { role: Role::Manager, .. } | Self::Service => Ok(()),
        }
    }

    /// Operations only Agora's components do (the ledger's, the likes nodes' among themselves).
    pub fn require_service(&self, what: &'static str) -> Result<(), IdentityError> {
        match self {
            Self::Service => Ok(()),
            Self::User { .. } | Self::Anonymous => Err(IdentityError::ServiceOnly(what)),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { name, role: Role::User } => write!(f, "{name}"),
            Self::User { name, role } => write!(f, "{name} ({role})"),
            Self::Service => f.write_str("an Agora service"),
            Self::Anonymous => f.write_str("an anonymous connection"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Caller {
        Caller::user(UserName::parse(name).unwrap(), Role::User)
    }

    fn manager(name: &str) -> Caller {
        Caller::user(UserName::parse(name).unwrap(), Role::Manager)
    }

    #[test]
    fn names_are_one_subject_token_starting_with_a_letter_or_digit() {
        for good in ["a", "alice", "Bob_2", "x-y", "0day", &"n".repeat(USER_NAME_BYTES_MAX)] {
            assert_eq!(UserName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "_agora",
            "-x",
            "a.b",
            "a b",
            "*",
            ">",
            "ä",
            "a\n",
            &"n".repeat(USER_NAME_BYTES_MAX + 1),
        ] {
            assert!(matches!(UserName::parse(bad), Err(IdentityError::InvalidName(_))), "{bad:?}");
        }
        assert!(UserName::parse(SERVICE_OWNER).is_err(), "no user owns what services own");
        let reserved = vec!["exchange".to_owned()];
        assert_eq!(
            UserName::parse_new("Exchange", &reserved),
            Err(IdentityError::Reserved("Exchange".into()))
        );
        assert!(UserName::parse_new("exchanger", &reserved).is_ok());
    }

    #[test]
    fn roles_round_trip_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("admin").is_err());
        assert!(Role::parse("Manager").is_err());
    }

    #[test]
    fn a_user_acts_only_as_themselves_and_a_service_as_it_names() {
        let alice = user("alice");
        assert_eq!(alice.acting_as("account", None), Ok(Some("alice")));
        assert_eq!(alice.acting_as("account", Some("alice")), Ok(Some("alice")));
        assert!(matches!(
            alice.acting_as("account", Some("bob")),
            Err(IdentityError::NotYours { what: "account", .. })
        ));
        // A manager moves no one else's money either.
        assert!(manager("boss").acting_on("account", Some("alice")).is_err());
        assert_eq!(manager("boss").acting_on("account", None), Ok("boss"));
        let service = Caller::Service;
        assert_eq!(service.acting_as("account", Some("bob")), Ok(Some("bob")));
        assert_eq!(service.acting_as("account", None), Ok(None));
        assert_eq!(service.acting_on("account", None), Err(IdentityError::UserOnly("account")));
        assert_eq!(alice.owner(), "alice");
        assert_eq!(service.owner(), SERVICE_OWNER);
    }

    #[test]
    fn reading_changing_and_managing_follow_the_table() {
        let (alice, bob, boss, service) =
            (user("alice"), user("bob"), manager("boss"), Caller::Service);
        let anonymous = Caller::Anonymous;
        // (caller, may read alice's, may change alice's, manager's operations, services' only)
        let table = [
            (&alice, true, true, false, false),
            (&bob, false, false, false, false),
            (&boss, true, false, true, false),
            (&service, true, true, true, true),
            (&anonymous, false, false, false, false),
        ];
        for (caller, read, change, manage, serve) in table {
            assert_eq!(caller.may_read("task", "alice").is_ok(), read, "{caller} reads");
            assert_eq!(caller.may_change("task", "alice").is_ok(), change, "{caller} changes");
            assert_eq!(caller.require_manager("listing").is_ok(), manage, "{caller} manages");
            assert_eq!(caller.require_service("ledger").is_ok(), serve, "{caller} serves");
        }
        assert_eq!(
            anonymous.acting_as("account", None),
            Err(IdentityError::SignInFirst("account"))
        );
        assert_eq!(anonymous.signed_in("a task"), Err(IdentityError::SignInFirst("a task")));
        assert!(alice.signed_in("a task").is_ok() && service.signed_in("a task").is_ok());
        assert_eq!(boss.to_string(), "boss (manager)");
        assert_eq!(alice.to_string(), "alice");
    }
}
