use crate::support::*;
use secrecy::ExposeSecret;

both_backends! {
    async fn generated_keys_persist_across_restarts(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let keys_dir = app.data_dir.path().join("keys");
        for file in ["access-eddsa.pem", "refresh-hs256.secret"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(keys_dir.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        // Written through temporary files that are gone once linked into place.
        let mut names: Vec<String> = std::fs::read_dir(&keys_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["access-eddsa.pem", "refresh-hs256.secret"]);
        // The SQLite database (password hashes) is private too, with its WAL companions.
        if matches!(b, Backend::Sqlite) {
            use std::os::unix::fs::PermissionsExt;
            for file in ["auth.db", "auth.db-wal", "auth.db-shm"] {
                let path = app.data_dir.path().join(file);
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{file}");
            }
        }
        let app = app.restart().await;
        assert_eq!(app.verify(&at).await.status, 200);
        assert_eq!(app.refresh(&rt).await.status, 200);
    }

    async fn signing_key_rotation_keeps_old_tokens_valid(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (old_at, _) = app.signed_in("alice").await;
        let old_kid = header(&old_at)["kid"].as_str().unwrap().to_string();
        let old_key_file = app.data_dir.path().join("keys/access-eddsa.pem");
        let config = app.data_dir.path().join("rotation.toml");
        std::fs::write(
            &config,
            format!(
                "[[keys.verification_keys]]\nkid = \"{old_kid}\"\nalgorithm = \"EdDSA\"\nkey_file = \"{}\"\n",
                old_key_file.display()
            ),
        )
        .unwrap();
        let new_key = auth_service::security::keys::generate(auth_service::config::SigningAlgorithm::EdDSA).unwrap();
        let new_key = new_key.expose_secret().to_string();
        let app = app
            .restart_with(&[
                ("AUTH__KEYS__SIGNING_KEY", new_key.as_str()),
                ("TEST_CONFIG_FILE", config.to_str().unwrap()),
            ])
            .await;
        assert_eq!(app.verify(&old_at).await.status, 200, "old key still verifies");
        let fresh = app.login("alice", "correct horse battery").await;
        let new_at = fresh.str("access_token");
        assert_ne!(header(&new_at)["kid"].as_str().unwrap(), old_kid);
        assert_eq!(app.verify(&new_at).await.status, 200);
        // Once the old key is dropped from configuration, its tokens are refused.
        std::fs::write(&config, "").unwrap();
        let app = app.restart().await;
        assert_eq!(app.verify(&old_at).await.body["error"], "invalid_token");
        assert_eq!(app.verify(&new_at).await.status, 200);
    }

    async fn es256_and_hs256_are_selectable(b: Backend) {
        for alg in ["ES256", "HS256"] {
            let app = TestApp::spawn_with(b, &[("AUTH__KEYS__ALGORITHM", alg)]).await;
            let (at, rt) = app.signed_in("alice").await;
            assert_eq!(header(&at)["alg"], alg);
            assert_eq!(header(&rt)["alg"], "HS256");
            assert_eq!(app.verify(&at).await.status, 200, "{alg}");
            assert_eq!(app.refresh(&rt).await.status, 200, "{alg}");
        }
    }
}

both_backends! {
    async fn jwks_publishes_the_keys_that_verify_tokens(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, _) = app.signed_in("alice").await;
        let r = app.send(app.client.get(format!("{}/.well-known/jwks.json", app.public))).await;
        assert_eq!(r.status, 200);
        // `keys rotate` publishes a new key this long (and more) before it signs.
        let max_age = format!("public, max-age={}", auth_service::security::keys::JWKS_MAX_AGE_SECS);
        assert_eq!(r.header("cache-control"), Some(max_age.as_str()));
        let keys = r.body["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{}", r.body);
        let jwk = &keys[0];
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str(), jwk["use"].as_str()), (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig")));
        assert_eq!(jwk["kid"], header(&at)["kid"]);
        assert!(jwk.get("d").is_none(), "a private part was published: {jwk}");
        // An access token verifies with the published key alone.
        let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_audience(&["resource-servers"]);
        validation.set_issuer(&["auth-service"]);
        validation.validate_exp = false; // the test clock, not the system's, issued it
        let claims = jsonwebtoken::decode::<serde_json::Value>(&at, &key, &validation).unwrap().claims;
        assert_eq!(claims["sub"], sub_of(&at).as_str());
    }
}

#[actix_web::test]
async fn jwks_of_es256_includes_retired_keys_and_of_hs256_is_empty() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("AUTH__KEYS__ALGORITHM", "ES256")]).await;
    let (old_at, _) = app.signed_in("alice").await;
    let old_kid = header(&old_at)["kid"].as_str().unwrap().to_string();
    // Rotate: a new signing key, the old one kept for verification.
    let old_key_file = app.data_dir.path().join("keys/access-es256.pem");
    let config = app.data_dir.path().join("rotation.toml");
    std::fs::write(
        &config,
        format!(
            "[[keys.verification_keys]]\nkid = \"{old_kid}\"\nalgorithm = \"ES256\"\nkey_file = \"{}\"\n",
            old_key_file.display()
        ),
    )
    .unwrap();
    let new_key =
        auth_service::security::keys::generate(auth_service::config::SigningAlgorithm::ES256)
            .unwrap();
    let new_key = secrecy::ExposeSecret::expose_secret(&new_key).to_string();
    let config = config.display().to_string();
    let app = app
        .restart_with(&[
            ("AUTH__KEYS__SIGNING_KEY", new_key.as_str()),
            ("TEST_CONFIG_FILE", config.as_str()),
        ])
        .await;
    let r = app
        .send(
            app.client
                .get(format!("{}/.well-known/jwks.json", app.public)),
        )
        .await;
    let kids: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{}", r.body);
    assert!(kids.contains(&old_kid.as_str()));
    for k in r.body["keys"].as_array().unwrap() {
        assert_eq!(
            (k["kty"].as_str(), k["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert!(k["x"].is_string() && k["y"].is_string());
    }
    let hs = TestApp::spawn_with(Backend::Sqlite, &[("AUTH__KEYS__ALGORITHM", "HS256")]).await;
    let r = hs
        .send(
            hs.client
                .get(format!("{}/.well-known/jwks.json", hs.public)),
        )
        .await;
    assert_eq!(r.body, serde_json::json!({"keys": []}));
}
