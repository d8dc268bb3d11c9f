use super::*;

#[tokio::test]
async fn a_password_matches_its_own_hash_only() {
    let passwords = Passwords::new().unwrap();
    let hash = passwords.hash("correct horse".into()).await.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_ne!(hash, passwords.hash("correct horse".into()).await.unwrap(), "salted");
    assert!(passwords.check("correct horse".into(), Some(hash.clone())).await.unwrap());
    assert!(!passwords.check("correct horsE".into(), Some(hash)).await.unwrap());
    assert!(!passwords.check("anything".into(), None).await.unwrap(), "no user: no match");
    assert!(!passwords.check("x".into(), Some("not a hash".into())).await.unwrap());
}

#[test]
fn tokens_are_long_random_and_stored_as_digests() {
    let (one, two) = (new_token().unwrap(), new_token().unwrap());
    assert_ne!(one, two);
    assert!(one.starts_with(TOKEN_PREFIX) && one.len() == TOKEN_PREFIX.len() + 43, "{one}");
    assert_eq!(digest(&one).len(), 64);
    assert_eq!(digest(&one), digest(&one.clone()));
    assert_ne!(digest(&one), digest(&two));
}
