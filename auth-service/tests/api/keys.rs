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
