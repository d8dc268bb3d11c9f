use super::*;

/// A request as nats-server 2.15 sends it for a user and password client (the shape of
/// its JSON: optional fields left out).
fn request_claims(server: &KeyPair, user_nkey: &str) -> serde_json::Value {
    serde_json::json!({
        "iat": 1, "iss": server.public_key(), "sub": "AAXX", "aud": "nats-authorization-request",
        "nats": {
            "server_id": {"name": "n1", "host": "0.0.0.0", "id": server.public_key(),
                          "version": "2.15.1"},
            "user_nkey": user_nkey,
            "client_info": {"host": "127.0.0.1", "id": 7, "kind": "Client", "type": "nats"},
            "connect_opts": {"user": "alice", "pass": "secret", "lang": "rust",
                             "protocol": 1},
            "type": "authorization_request", "version": 2
        }
    })
}

#[test]
fn a_signed_request_is_read_and_a_forged_one_refused() {
    let server = KeyPair::new_server();
    let user = KeyPair::new_user();
    let claims: Claims<serde_json::Value> =
        serde_json::from_value(request_claims(&server, &user.public_key())).unwrap();
    let token = encode(claims, &server, 1).unwrap();
    let read: Claims<AuthorizationRequest> = decode(&token).unwrap();
    assert_eq!(read.nats.user_nkey, user.public_key());
    assert_eq!(read.nats.server_id.id, server.public_key());
    assert_eq!(read.nats.connect_opts.user.as_deref(), Some("alice"));
    assert_eq!(read.nats.connect_opts.auth_token, None);
    // Claims changed after signing, or signed by another key than `iss` says: refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = request_claims(&server, &user.public_key());
    forged["nats"]["connect_opts"]["user"] = "bob".into();
    let forged_body = BASE64URL_NOPAD.encode(forged.to_string().as_bytes());
    parts[1] = &forged_body;
    assert!(matches!(decode::<AuthorizationRequest>(&parts.join(".")), Err(JwtError::Signature)));
    let mallory = KeyPair::new_server();
    let mut claims: Claims<serde_json::Value> =
        serde_json::from_value(request_claims(&server, &user.public_key())).unwrap();
    claims.iss = server.public_key();
    let other = encode(claims, &mallory, 1).unwrap();
    let read: Claims<AuthorizationRequest> = decode(&other).unwrap();
    assert_eq!(read.iss, mallory.public_key(), "the signer is who iss says, nobody else");
    for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert!(decode::<AuthorizationRequest>(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_response_carries_a_user_jwt_for_the_connection() {
    let issuer = KeyPair::new_account();
    let user = User::new(
        Permission { allow: vec!["agora.bank.balance".into()], deny: vec![] },
        Permission { allow: vec!["_INBOX.alice.>".into()], deny: vec![] },
        100,
        65_536,
    );
    let user_claims = Claims {
        jti: String::new(),
        iat: 0,
        iss: String::new(),
        sub: "UCONN".into(),
        aud: "USERS".into(),
        name: "alice".into(),
        exp: Some(2_000_000_000),
        nats: user,
    };
    let user_jwt = encode(user_claims, &issuer, 10).unwrap();
    let read: Claims<serde_json::Value> = decode(&user_jwt).unwrap();
    assert_eq!((read.iss.as_str(), read.iat), (issuer.public_key().as_str(), 10));
    assert_eq!(read.nats["pub"]["allow"][0], "agora.bank.balance");
    assert_eq!(read.nats["type"], "user");
    assert_eq!(read.jti.len(), 52, "base32 of 32 bytes, as the Go library makes it");
    let response = Claims {
        jti: String::new(),
        iat: 0,
        iss: String::new(),
        sub: "UCONN".into(),
        aud: "NSERVER".into(),
        name: String::new(),
        exp: None,
        nats: AuthorizationResponse::allow(user_jwt.clone()),
    };
    let read: Claims<serde_json::Value> = decode(&encode(response, &issuer, 10).unwrap()).unwrap();
    assert_eq!(read.nats["jwt"], user_jwt.as_str());
    assert_eq!(read.nats["type"], "authorization_response");
    assert!(read.nats.get("error").is_none());
}
