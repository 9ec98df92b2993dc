//! Notifications to the auth service: written with the change, delivered in order with the
//! right credentials, kept while the auth service is down or this service restarts.

use serde_json::Value;
use testkit::both_backends;

use crate::support::*;

const PW: &str = "correct horse battery";
const NEW_PW: &str = "a whole new password";

fn pairs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Disables, revokes `admin`, then `ops`: three notifications, in this order. Grants,
/// enabling and a password change through the contract notify nothing (the auth service
/// made that change and ends the other sessions itself).
async fn three_changes(s: &UserService) -> String {
    let id = s.user("nina", PW).await;
    assert_eq!(s.set_roles(&id, &["admin", "ops"]).await.status, 200);
    s.set_disabled(&id, true).await;
    s.set_disabled(&id, false).await;
    assert_eq!(s.set_roles(&id, &["ops"]).await.status, 200);
    assert_eq!(s.change_password(&id, PW, NEW_PW).await.status, 204);
    assert_eq!(s.set_roles(&id, &[]).await.status, 200);
    id
}

#[track_caller]
fn assert_the_three(events: &[Value], user_id: &str) {
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["user_disabled", "role_revoked", "role_revoked"],
        "{events:?}"
    );
    let mut ids = std::collections::HashSet::new();
    for e in events {
        assert_eq!(e["user_id"], user_id);
        let id = uuid::Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert!(ids.insert(id), "repeated event id");
        assert!(e["at"].as_i64().unwrap() > 1_700_000_000);
        let expected_keys = if e["kind"] == "role_revoked" { 5 } else { 4 };
        assert_eq!(e.as_object().unwrap().len(), expected_keys, "{e}");
    }
    assert_eq!(events[1]["role"], "admin");
    assert_eq!(events[2]["role"], "ops");
}

both_backends! {
    async fn delivered_in_order_with_the_right_credentials(b: Backend) {
        let receiver = Receiver::started(Answer::Accept).await;
        let settings = receiver.settings();
        let s = UserService::start_with(b, &pairs(&settings)).await;
        let id = three_changes(&s).await;
        wait_until("three notifications", || receiver.accepted().len() >= 3).await;
        assert_the_three(&receiver.accepted(), &id);
        for auth in receiver.authorizations() {
            assert_eq!(
                decode_basic(&auth.expect("an Authorization header")),
                (OUT_ID.to_string(), OUT_SECRET.to_string())
            );
        }
        wait_until("an empty outbox", || s.pending() == 0).await;
        // A no-op (disabling twice, re-granting the same roles) notifies nothing more.
        let again = s.user("olga", PW).await;
        s.set_disabled(&again, true).await;
        s.set_disabled(&again, true).await;
        wait_until("the fourth notification", || receiver.accepted().len() >= 4).await;
        assert_eq!(s.set_roles(&again, &[]).await.status, 200);
        wait_until("an empty outbox", || s.pending() == 0).await;
        assert_eq!(receiver.accepted().len(), 4);
        s.assert_no_secrets(&[PW, NEW_PW]);
    }

    async fn retried_while_the_auth_service_answers_503(b: Backend) {
        let receiver = Receiver::started(Answer::Unavailable).await;
        let settings = receiver.settings();
        let s = UserService::start_with(b, &pairs(&settings)).await;
        let id = three_changes(&s).await;
        // Several attempts at the first row, none accepted, all rows kept.
        wait_until("retries", || receiver.attempts() >= 3).await;
        assert!(receiver.accepted().is_empty());
        assert_eq!(s.pending(), 3);
        receiver.answer(Answer::Accept);
        wait_until("three notifications", || receiver.distinct().len() >= 3).await;
        assert_the_three(&receiver.distinct(), &id);
        wait_until("an empty outbox", || s.pending() == 0).await;
    }

    /// A notification the auth service refuses for good (400) is dropped, once, with an
    /// error in the log, so it does not hold back the ones after it.
    async fn a_permanent_refusal_does_not_block_the_queue(b: Backend) {
        let receiver = Receiver::started(Answer::BadRequest).await;
        let settings = receiver.settings();
        let s = UserService::start_with(b, &pairs(&settings)).await;
        three_changes(&s).await;
        wait_until("an empty outbox", || s.pending() == 0).await;
        assert_eq!(receiver.attempts(), 3, "each refused notification was sent once");
        assert!(receiver.accepted().is_empty());
        // Each row is deleted before its error line is written, and the test reads the log
        // through a pipe: the third line may arrive just after the outbox is seen empty.
        wait_until("three refusals in the log", || {
            s.service.output().matches("for good (400").count() >= 3
        })
        .await;
        assert_eq!(s.service.output().matches("for good (400").count(), 3);
        assert_eq!(receiver.attempts(), 3, "nothing was sent again");
    }

    async fn retried_while_the_auth_service_is_unreachable(b: Backend) {
        // Nothing listens on the receiver's port yet.
        let mut receiver = Receiver::new(Answer::Accept);
        let settings = receiver.settings();
        let s = UserService::start_with(b, &pairs(&settings)).await;
        let id = three_changes(&s).await;
        wait_until("failed attempts", || {
            s.service.output().matches("user notification not delivered").count() >= 2
        })
        .await;
        assert_eq!(s.pending(), 3);
        receiver.start();
        wait_until("three notifications", || receiver.distinct().len() >= 3).await;
        assert_the_three(&receiver.distinct(), &id);
        wait_until("an empty outbox", || s.pending() == 0).await;
        s.assert_no_secrets(&[PW, NEW_PW]);
    }

    async fn refused_credentials_are_logged_and_retried(b: Backend) {
        let receiver = Receiver::started(Answer::Unauthorized).await;
        let settings = receiver.settings();
        let s = UserService::start_with(b, &pairs(&settings)).await;
        let id = three_changes(&s).await;
        wait_until("the refusal in the log", || {
            s.service.output().contains("refused this service's client credentials")
        })
        .await;
        wait_until("a retry", || receiver.attempts() >= 2).await;
        assert_eq!(s.pending(), 3);
        receiver.answer(Answer::Accept);
        wait_until("three notifications", || receiver.distinct().len() >= 3).await;
        assert_the_three(&receiver.distinct(), &id);
        s.assert_no_secrets(&[PW, NEW_PW]);
    }

    async fn nothing_is_lost_across_a_restart(b: Backend) {
        let receiver = Receiver::started(Answer::Unavailable).await;
        let settings = receiver.settings();
        let mut s = UserService::start_with(b, &pairs(&settings)).await;
        let id = three_changes(&s).await;
        wait_until("an attempt", || receiver.attempts() >= 1).await;
        // Killed (SIGKILL) with everything pending.
        s.service.stop();
        assert_eq!(s.pending(), 3);
        receiver.answer(Answer::Accept);
        s.service.restart().await;
        wait_until("three notifications", || receiver.distinct().len() >= 3).await;
        assert_the_three(&receiver.distinct(), &id);
        wait_until("an empty outbox", || s.pending() == 0).await;
        // The restarted service still knows the users.
        assert_eq!(s.verify("nina", NEW_PW).await.status, 200);
    }

    async fn kept_when_no_auth_url_is_set(b: Backend) {
        let s = UserService::start(b).await;
        three_changes(&s).await;
        assert_eq!(s.pending(), 3);
        assert!(s.service.output().contains("auth.url is unset"));
    }
}
