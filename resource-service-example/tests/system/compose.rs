//! docker-compose.yml, deploy/.env.example and deploy/Dockerfile, proven without a Docker
//! engine: the environment compose would give each container (image `ENV` from the
//! Dockerfile, then the compose `environment`, `${VAR:-default}` substituted from
//! deploy/.env.example) is handed to the real binaries, with compose hostnames and fixed
//! addresses mapped to 127.0.0.1, listener ports remapped to free ones, container paths mapped
//! into a temporary directory, and the database to a fresh one on the machine's PostgreSQL.
//! The load balancer is a real nginx running deploy/nginx/lb.conf in front of one auth-service
//! process. Every variable must be one the binary reads, and a request must go all the way
//! through: with the default services alone, and with the optional profiles on (`events`: a
//! NATS server of the test's own in place of the `nats` service; `remote-users`: the real
//! user service).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::nginx::{Nginx, render_lb};
use crate::support::*;

const AUTH: &str = "auth-service";
const LB: &str = "auth-lb";
const RS: &str = "resource-service-example";
const SETUP: &str = "auth-setup";
const NATS: &str = "nats";
const USERS: &str = "user-service";
const SETUP_USERS: &str = "auth-setup-users";
const EVENTS: &str = "events";
const REMOTE_USERS: &str = "remote-users";
/// What deploy/.env.example puts where a secret belongs.
const PLACEHOLDER: &str = "change-me";

/// The `user-service` binary of this workspace (see `testkit::workspace_bin`).
fn user_service_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| testkit::workspace_bin("user-service-example", USERS))
}

fn read(path: &str) -> String {
    let full = workspace_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped, quotes removed).
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// What deploy/.env.example says about the optional profiles: the variables of each profile's
/// section (headed `# --- profile NAME`), and the values operators are told to set to turn
/// the profile on (the section's `#   KEY=VALUE` comment lines).
struct ProfileDoc {
    variables: BTreeMap<String, BTreeSet<String>>,
    turn_on: BTreeMap<String, BTreeMap<String, String>>,
}

fn profile_doc(text: &str) -> ProfileDoc {
    let mut doc = ProfileDoc {
        variables: BTreeMap::new(),
        turn_on: BTreeMap::new(),
    };
    let mut profile: Option<String> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(header) = line.strip_prefix("# ---") {
            profile = header
                .trim_start_matches('-')
                .trim()
                .strip_prefix("profile ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(String::from);
            if let Some(p) = &profile {
                doc.variables.entry(p.clone()).or_default();
                doc.turn_on.entry(p.clone()).or_default();
            }
            continue;
        }
        let Some(p) = &profile else { continue };
        if let Some(example) = line.strip_prefix("#   ") {
            if let Some((k, v)) = example.split_once('=')
                && !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                doc.turn_on
                    .get_mut(p)
                    .unwrap()
                    .insert(k.to_string(), v.trim().to_string());
            }
        } else if !line.starts_with('#')
            && let Some((k, _)) = line.split_once('=')
        {
            doc.variables
                .get_mut(p)
                .unwrap()
                .insert(k.trim().to_string());
        }
    }
    doc
}

/// Compose variable substitution: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}`, `${VAR?error}`. Records every variable name used.
fn interpolate(
    s: &str,
    vars: &BTreeMap<String, String>,
    used: &mut BTreeSet<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            if name.is_empty() {
                return Err(format!("bad substitution ${{{expr}}} in {s:?}"));
            }
            used.insert(name.to_string());
            let value = vars.get(name);
            let set = value.is_some();
            let non_empty = value.is_some_and(|v| !v.is_empty());
            let v = value.cloned().unwrap_or_default();
            out.push_str(&if op.is_empty() {
                v
            } else if let Some(d) = op.strip_prefix(":-") {
                if non_empty { v } else { d.to_string() }
            } else if let Some(d) = op.strip_prefix('-') {
                if set { v } else { d.to_string() }
            } else if let Some(e) = op.strip_prefix(":?") {
                if non_empty {
                    v
                } else {
                    return Err(format!("{name}: {e}"));
                }
            } else if let Some(e) = op.strip_prefix('?') {
                if set {
                    v
                } else {
                    return Err(format!("{name}: {e}"));
                }
            } else {
                return Err(format!("unsupported substitution ${{{expr}}} in {s:?}"));
            });
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("lone $ in {s:?} (write $$)"));
            }
            used.insert(rest[..end].to_string());
            out.push_str(vars.get(&rest[..end]).map_or("", String::as_str));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(
    v: &Value,
    vars: &BTreeMap<String, String>,
    used: &mut BTreeSet<String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(interpolate(s, vars, used)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| interpolate_all(i, vars, used))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), interpolate_all(v, vars, used)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// docker-compose.yml as compose sees it with `--env-file deploy/.env.example`, and the
/// variables it uses.
struct Compose {
    doc: Value,
    used: BTreeSet<String>,
    env_example: BTreeMap<String, String>,
}

impl Compose {
    fn load() -> Compose {
        Compose::load_with(&BTreeMap::new())
    }

    /// With the values deploy/.env.example gives for turning both profiles on, as an
    /// operator who follows it has them in .env.
    fn with_profiles() -> Compose {
        let doc = profile_doc(&read("deploy/.env.example"));
        let on: BTreeMap<String, String> = doc.turn_on.into_values().flatten().collect();
        assert!(!on.is_empty(), "deploy/.env.example: no profile settings");
        Compose::load_with(&on)
    }

    /// `overrides` on top of deploy/.env.example, as lines changed in .env; and every
    /// `change-me-…` placeholder replaced by a random value, as the file asks (the binaries
    /// refuse the placeholders: see `the_env_example_placeholders_are_refused`).
    fn load_with(overrides: &BTreeMap<String, String>) -> Compose {
        Compose::interpolated(overrides, true)
    }

    /// With both profiles on and the placeholders left as deploy/.env.example ships them.
    fn with_profiles_as_shipped() -> Compose {
        let doc = profile_doc(&read("deploy/.env.example"));
        let on: BTreeMap<String, String> = doc.turn_on.into_values().flatten().collect();
        Compose::interpolated(&on, false)
    }

    fn interpolated(overrides: &BTreeMap<String, String>, set_secrets: bool) -> Compose {
        let raw: Value = serde_norway::from_str(&read("docker-compose.yml"))
            .expect("docker-compose.yml is YAML");
        let env_example = parse_env_file(&read("deploy/.env.example"));
        let mut vars = env_example.clone();
        vars.extend(overrides.clone());
        if set_secrets {
            for value in vars.values_mut().filter(|v| v.contains(PLACEHOLDER)) {
                *value = uuid::Uuid::new_v4().simple().to_string();
            }
        }
        let mut used = BTreeSet::new();
        let doc = interpolate_all(&raw, &vars, &mut used)
            .unwrap_or_else(|e| panic!("docker-compose.yml with deploy/.env.example: {e}"));
        Compose {
            doc,
            used,
            env_example,
        }
    }

    fn service_names(&self) -> Vec<String> {
        self.doc["services"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// The service's `profiles` (empty: it always runs).
    fn profiles(&self, name: &str) -> Vec<String> {
        self.service(name)["profiles"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// The services the service waits for.
    fn depends_on(&self, name: &str) -> BTreeSet<String> {
        match &self.service(name)["depends_on"] {
            Value::Object(map) => map.keys().cloned().collect(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether `source` (a mount's source) is one of the file's named volumes.
    fn is_named_volume(&self, source: &str) -> bool {
        self.doc["volumes"]
            .as_object()
            .is_some_and(|v| v.contains_key(source))
    }

    fn service(&self, name: &str) -> &Value {
        let s = &self.doc["services"][name];
        assert!(s.is_object(), "no service {name} in docker-compose.yml");
        s
    }

    /// The service's `environment`, as a map (compose allows a map or a `K=V` list).
    fn environment(&self, name: &str) -> Env {
        match &self.service(name)["environment"] {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => panic!("{name}: {k} has no value"),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let s = i.as_str().expect("K=V");
                    let (k, v) = s.split_once('=').expect("K=V");
                    (k.to_string(), v.to_string())
                })
                .collect(),
            Value::Null => Env::new(),
            other => panic!("{name}: environment is {other}"),
        }
    }

    /// Container ports the service publishes on the host.
    fn published(&self, name: &str) -> BTreeSet<u16> {
        self.service(name)["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        let p = match p {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            other => other["target"].to_string(),
                        };
                        let container = p.rsplit(':').next().unwrap_or(&p);
                        let container = container.split('/').next().unwrap_or(container);
                        container
                            .parse()
                            .unwrap_or_else(|_| panic!("{name}: port {p}"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Container ports the service exposes to the compose network only.
    fn exposed(&self, name: &str) -> BTreeSet<u16> {
        self.service(name)["expose"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => s.parse().unwrap(),
                        other => other.as_u64().unwrap().try_into().unwrap(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The fixed addresses services have on the compose networks.
    fn fixed_addresses(&self) -> BTreeSet<String> {
        let services = self.doc["services"].as_object().unwrap();
        services
            .values()
            .filter_map(|s| s["networks"].as_object())
            .flat_map(|nets| nets.values())
            .filter_map(|n| n["ipv4_address"].as_str().map(String::from))
            .collect()
    }

    /// Mount targets of the service's volumes, with their sources.
    fn mounts(&self, name: &str) -> Vec<(String, String)> {
        self.service(name)["volumes"]
            .as_array()
            .map(|vols| {
                vols.iter()
                    .map(|v| {
                        let v = v.as_str().expect("short volume syntax");
                        let mut parts = v.split(':');
                        let source = parts.next().unwrap_or_default().to_string();
                        let target = parts.next().expect("volume target").to_string();
                        (source, target)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The service's `command`, in exec form.
    fn command(&self, name: &str) -> Vec<String> {
        self.service(name)["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command in exec form"))
            .iter()
            .map(|a| a.as_str().expect("string argument").to_string())
            .collect()
    }

    /// Image `ENV` for the service's build target (its stage and the stages it is built on),
    /// then the compose `environment` on top: what the container's process sees.
    fn container_env(&self, name: &str) -> Env {
        let build = &self.service(name)["build"];
        assert_eq!(build["dockerfile"], "deploy/Dockerfile", "{name}");
        let target = build["target"].as_str().expect("build target");
        let stages = dockerfile_stages(&read("deploy/Dockerfile"));
        let mut chain = Vec::new();
        let mut stage = target.to_string();
        while let Some(s) = stages.iter().find(|s| s.name == stage) {
            chain.push(s);
            stage = s.base.clone();
        }
        assert!(!chain.is_empty(), "deploy/Dockerfile has no stage {target}");
        let mut env = Env::new();
        for s in chain.iter().rev() {
            env.extend(s.env.clone());
        }
        env.extend(self.environment(name));
        env
    }
}

struct Stage {
    name: String,
    base: String,
    env: Env,
    user: Option<String>,
    healthcheck: bool,
    entrypoint: Option<String>,
}

/// The stages of a Dockerfile with what these tests look at.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim) {
        let (instr, args) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            "FROM" => {
                let words: Vec<&str> = args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => String::new(),
                };
                stages.push(Stage {
                    name,
                    base: words.first().copied().unwrap_or_default().to_string(),
                    env: Env::new(),
                    user: None,
                    healthcheck: false,
                    entrypoint: None,
                });
            }
            "ENV" => {
                let stage = stages.last_mut().expect("ENV before FROM");
                for pair in args.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV K=V");
                    stage.env.insert(k.to_string(), v.to_string());
                }
            }
            "USER" => stages.last_mut().expect("USER before FROM").user = Some(args.into()),
            "HEALTHCHECK" => stages.last_mut().expect("FROM").healthcheck = true,
            "ENTRYPOINT" => stages.last_mut().expect("FROM").entrypoint = Some(args.into()),
            _ => {}
        }
    }
    stages
}

#[test]
fn env_example_lists_exactly_the_variables_compose_uses() {
    let compose = Compose::load();
    let listed: BTreeSet<String> = compose.env_example.keys().cloned().collect();
    let missing: Vec<_> = compose.used.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "used in docker-compose.yml, missing from deploy/.env.example: {missing:?}"
    );
    let unused: Vec<_> = listed.difference(&compose.used).collect();
    assert!(
        unused.is_empty(),
        "in deploy/.env.example, unused by docker-compose.yml: {unused:?}"
    );
    // The database password has no default: compose refuses to start without it.
    let raw = read("docker-compose.yml");
    assert!(
        raw.contains("${POSTGRES_PASSWORD:?"),
        "POSTGRES_PASSWORD must be required"
    );
    assert!(
        raw.contains("${RS_CLIENT_SECRET:?"),
        "RS_CLIENT_SECRET must be required"
    );
    let mut vars = compose.env_example.clone();
    vars.remove("POSTGRES_PASSWORD");
    let raw: Value = serde_norway::from_str(&raw).unwrap();
    let e = interpolate_all(&raw, &vars, &mut BTreeSet::new()).unwrap_err();
    assert!(e.starts_with("POSTGRES_PASSWORD"), "{e}");

    // The optional profiles: a section each, saying how to turn it on. The default `up` needs
    // none of their variables: compose interpolates the whole file whatever the profiles, so
    // a `${VAR:?}` of a profile would stop it.
    let doc = profile_doc(&read("deploy/.env.example"));
    assert_eq!(
        doc.variables.keys().collect::<Vec<_>>(),
        [EVENTS, REMOTE_USERS]
    );
    let mut default_vars = compose.env_example.clone();
    for (profile, vars) in &doc.variables {
        assert!(!vars.is_empty(), "{profile}: no variables");
        let on = &doc.turn_on[profile];
        assert!(
            !on.is_empty(),
            "{profile}: no `#   KEY=VALUE` to turn it on"
        );
        for key in on.keys() {
            assert!(
                vars.contains(key),
                "{profile}: {key} is not one of its variables"
            );
        }
        for var in vars {
            default_vars.remove(var);
        }
    }
    let without = interpolate_all(&raw, &default_vars, &mut BTreeSet::new())
        .unwrap_or_else(|e| panic!("the default `up` needs a profile's variable: {e}"));
    // ... and then the switches are off.
    let auth_env = &without["services"][AUTH]["environment"];
    assert_eq!(auth_env["AUTH__EVENTS__URL"], "");
    assert_eq!(auth_env["AUTH__USERS__SOURCE"], "local");
    assert_eq!(
        without["services"][RS]["environment"]["RS__EVENTS__URL"],
        ""
    );
}

#[test]
fn compose_file_has_the_shape_operators_rely_on() {
    let compose = Compose::load();
    // PostgreSQL 16 on a named volume, with a pg_isready health check, not published.
    let db = compose.service("db");
    assert!(
        db["image"].as_str().unwrap().starts_with("postgres:16"),
        "{}",
        db["image"]
    );
    let (source, target) = &compose.mounts("db")[0];
    assert_eq!(target, "/var/lib/postgresql/data");
    assert!(
        compose.doc["volumes"]
            .as_object()
            .unwrap()
            .contains_key(source),
        "{source} is not a named volume"
    );
    assert!(db["healthcheck"]["test"].to_string().contains("pg_isready"));
    assert!(
        compose.published("db").is_empty(),
        "the database is published"
    );

    // The auth service: several replicas that wait for a healthy database and publish
    // nothing; the balancer reaches both their listeners on the compose network.
    let auth = compose.service(AUTH);
    assert_eq!(auth["depends_on"]["db"]["condition"], "service_healthy");
    let replicas: u64 = match &auth["deploy"]["replicas"] {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_u64().expect("deploy.replicas"),
    };
    assert!(replicas >= 2, "{replicas} auth-service replica(s)");
    assert!(
        auth.get("container_name").is_none(),
        "replicas cannot share a container_name"
    );
    let env = compose.container_env(AUTH);
    let port_of =
        |key: &str, env: &Env| -> u16 { env[key].rsplit(':').next().unwrap().parse().unwrap() };
    let public = port_of("AUTH__SERVER__PUBLIC_ADDR", &env);
    let internal = port_of("AUTH__SERVER__INTERNAL_ADDR", &env);
    assert!(compose.published(AUTH).is_empty(), "a replica is published");
    assert_eq!(compose.exposed(AUTH), BTreeSet::from([public, internal]));

    // The balancer: nginx running deploy/nginx/lb.conf (mounted read-only), started once the
    // replicas are healthy. Only it publishes the public listener; /verify (the internal
    // listener) is published by no service at all.
    let lb = compose.service(LB);
    assert!(
        lb["image"].as_str().unwrap().starts_with("nginx:"),
        "{}",
        lb["image"]
    );
    assert_eq!(lb["depends_on"][AUTH]["condition"], "service_healthy");
    assert!(lb["healthcheck"]["test"].is_array(), "{LB}: no healthcheck");
    assert_eq!(compose.published(LB), BTreeSet::from([public]));
    assert_eq!(compose.exposed(LB), BTreeSet::from([internal]));
    for name in compose.doc["services"].as_object().unwrap().keys() {
        assert!(
            !compose.published(name).contains(&internal),
            "{name} publishes {internal} (/verify)"
        );
    }
    let lb_conf: Vec<&str> = lb["volumes"]
        .as_array()
        .expect("auth-lb volumes")
        .iter()
        .filter_map(Value::as_str)
        .filter(|v| v.starts_with("./deploy/nginx/lb.conf:"))
        .collect();
    assert_eq!(
        lb_conf,
        ["./deploy/nginx/lb.conf:/etc/nginx/conf.d/default.conf:ro"],
        "lb.conf mounted read-only in place of the image's default site"
    );
    assert!(workspace_root().join("deploy/nginx/lb.conf").is_file());
    // lb.conf listens on exactly those ports and proxies to the replicas' two listeners
    // (render_lb checks that every upstream server and listener of the file is one of these).
    render_lb(
        &[
            (&format!("{AUTH}:{public}"), &[1]),
            (&format!("{AUTH}:{internal}"), &[2]),
        ],
        &[(public, 3), (internal, 4)],
    );

    // The balancer has a fixed address in the network's fixed subnet, outside the range Docker
    // hands out to the other containers, and the replicas trust exactly that address as a
    // proxy (so per-address limits apply to clients).
    let ipam = &compose.doc["networks"]["default"]["ipam"]["config"][0];
    let subnet = ipam["subnet"]
        .as_str()
        .expect("a fixed subnet for the default network");
    let lb_addr = lb["networks"]["default"]["ipv4_address"]
        .as_str()
        .expect("a fixed address for the balancer");
    assert!(in_subnet(lb_addr, subnet), "{lb_addr} is not in {subnet}");
    assert_usable_host(lb_addr, subnet);
    let range = ipam["ip_range"].as_str().expect("ip_range");
    let range_net = range.split_once('/').expect("CIDR ip_range").0;
    assert!(in_subnet(range_net, subnet), "{range} is not in {subnet}");
    assert!(
        !in_subnet(lb_addr, range),
        "{lb_addr} is in ip_range {range}"
    );
    assert_eq!(env["AUTH__SERVER__TRUSTED_PROXIES"], lb_addr);
    // Discovery names the balancer, never a replica's own address.
    assert_eq!(
        env["AUTH__SERVER__INTERNAL_URL"],
        format!("http://{LB}:{internal}")
    );
    assert_eq!(
        env["AUTH__SERVER__PUBLIC_URL"],
        format!(
            "http://localhost:{}",
            compose.env_example["AUTH_PUBLIC_PORT"]
        )
    );

    // /verify answers registered resource servers only; auth-setup registers the example
    // (once the replicas have made the keys), and the example waits for it to succeed and
    // authenticates with the same id and secret.
    assert_eq!(env["AUTH__VERIFY__REQUIRE_CLIENT"], "true");
    let setup = compose.service(SETUP);
    assert_eq!(setup["depends_on"][AUTH]["condition"], "service_healthy");
    assert_eq!(setup["image"], auth["image"]);
    let rs_service = compose.service(RS);
    assert_eq!(
        rs_service["depends_on"][SETUP]["condition"],
        "service_completed_successfully"
    );
    let args = compose.command(SETUP);
    let arg = |flag: &str| {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{SETUP}: no {flag}"));
        args[at + 1].clone()
    };
    assert_eq!(&args[..2], ["client", "create"]);
    assert!(args.contains(&"--introspect".into()) && args.contains(&"--update-existing".into()));
    let setup_env = compose.container_env(SETUP);
    let rs_env = compose.container_env(RS);
    assert_eq!(arg("--client-id"), rs_env["RS__AUTH__CLIENT_ID"]);
    assert_eq!(
        setup_env[&arg("--secret-env")],
        rs_env["RS__AUTH__CLIENT_SECRET"]
    );
    assert_eq!(setup_env["DATABASE_URL"], env["DATABASE_URL"]);
    assert_eq!(setup_env["AUTH__KEYS__DIR"], env["AUTH__KEYS__DIR"]);
    let keys_mount = |service: &str| {
        compose
            .mounts(service)
            .into_iter()
            .find(|(_, target)| *target == env["AUTH__KEYS__DIR"])
            .map(|(source, _)| source)
    };
    assert_eq!(
        keys_mount(SETUP),
        keys_mount(AUTH),
        "{SETUP} reads the replicas' keys"
    );
    // Keys live on a volume (or a mounted secrets directory), not in the container.
    let keys_dir = &env["AUTH__KEYS__DIR"];
    assert!(
        compose
            .mounts(AUTH)
            .iter()
            .any(|(_, t)| keys_dir.starts_with(t.as_str())),
        "AUTH__KEYS__DIR {keys_dir} is not on a volume"
    );

    // The resource service is published and asks the replicas' internal listener through the
    // balancer, once the balancer is healthy.
    let rs_env = compose.container_env(RS);
    assert_eq!(
        compose.published(RS),
        BTreeSet::from([port_of("RS__SERVER__ADDR", &rs_env)])
    );
    assert_eq!(
        rs_env["RS__AUTH__VERIFY_URL"],
        format!("http://{LB}:{internal}/verify")
    );
    assert_eq!(
        compose.service(RS)["depends_on"][LB]["condition"],
        "service_healthy"
    );

    // The images: built from one Dockerfile, non-root, with a health check each.
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    assert!(stages.len() >= 3, "multi-stage");
    for name in [AUTH, RS] {
        assert_eq!(compose.service(name)["build"]["target"], name);
        let stage = stages.iter().find(|s| s.name == name).unwrap();
        assert!(stage.healthcheck, "{name}: no HEALTHCHECK");
        let user = stage.user.as_deref().unwrap_or("root");
        assert!(
            !user.starts_with("root") && !user.starts_with('0'),
            "{name} runs as {user}"
        );
        assert!(
            stage.entrypoint.as_deref().unwrap().contains(name),
            "{name}: entrypoint"
        );
    }
    // The Dockerfile copies every workspace member it builds.
    let dockerfile = read("deploy/Dockerfile");
    for member in [AUTH, RS, "migrations"] {
        assert!(
            dockerfile.contains(&format!("COPY {member} {member}")),
            "{member} not copied"
        );
    }
}

/// The value after `flag` in an exec-form command.
fn arg_of(args: &[String], flag: &str) -> String {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} without a value"))
        .clone()
}

/// The port of a listen address (`0.0.0.0:8090`).
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not HOST:PORT: {addr}"))
}

#[test]
fn compose_profiles_have_the_shape_operators_rely_on() {
    let compose = Compose::load();
    // Exactly these services are optional, in these profiles; every other one always runs.
    let optional: BTreeMap<String, Vec<String>> = compose
        .service_names()
        .into_iter()
        .map(|name| (compose.profiles(&name), name))
        .filter(|(profiles, _)| !profiles.is_empty())
        .map(|(profiles, name)| (name, profiles))
        .collect();
    assert_eq!(
        optional,
        BTreeMap::from([
            (NATS.to_string(), vec![EVENTS.to_string()]),
            (SETUP_USERS.to_string(), vec![REMOTE_USERS.to_string()]),
            (USERS.to_string(), vec![REMOTE_USERS.to_string()]),
        ])
    );
    for name in compose.service_names() {
        // An always-on service waiting for an optional one would fail (or start it).
        if compose.profiles(&name).is_empty() {
            let deps = compose.depends_on(&name);
            assert!(
                deps.iter().all(|d| !optional.contains_key(d)),
                "{name} depends on a profile service: {deps:?}"
            );
        }
    }
    // Nothing optional is published on the host.
    for name in optional.keys() {
        assert!(compose.published(name).is_empty(), "{name} is published");
    }

    // nats: the official image with JetStream on, its store on a named volume; the health
    // check asks the monitoring listener, with a tool the image has (the scratch image has
    // none; the alpine one has busybox's wget).
    let nats = compose.service(NATS);
    let image = nats["image"].as_str().unwrap();
    assert!(image.starts_with("nats:"), "{image}");
    let args = compose.command(NATS);
    assert!(
        args.iter().any(|a| a == "--jetstream" || a == "-js"),
        "{args:?}"
    );
    let store = arg_of(&args, "--store_dir");
    let store_mount = compose
        .mounts(NATS)
        .into_iter()
        .find(|(_, target)| *target == store)
        .unwrap_or_else(|| panic!("the JetStream store {store} is not on a volume"));
    assert!(compose.is_named_volume(&store_mount.0), "{store_mount:?}");
    let monitor = arg_of(&args, "--http_port");
    let probe: Vec<&str> = nats["healthcheck"]["test"]
        .as_array()
        .expect("nats: a healthcheck in exec form")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(probe[0], "CMD");
    assert!(
        probe[1] == "wget" && image.contains("alpine"),
        "nats: {probe:?} cannot run in {image}"
    );
    assert!(
        probe.contains(&format!("http://127.0.0.1:{monitor}/healthz").as_str()),
        "{probe:?}"
    );
    assert_eq!(compose.exposed(NATS), BTreeSet::from([4222]));

    // Off by default: no events, users in the auth service's own tables.
    let auth_off = compose.container_env(AUTH);
    assert_eq!(auth_off["AUTH__EVENTS__URL"], "");
    assert_eq!(auth_off["AUTH__USERS__SOURCE"], "local");
    assert_eq!(auth_off["AUTH__USERS__REMOTE_URL"], "");
    assert_eq!(compose.container_env(RS)["RS__EVENTS__URL"], "");

    // Turned on as deploy/.env.example says: both services at the nats service, the auth
    // service's users at the user service, with the secret the user service expects.
    let on = Compose::with_profiles();
    let auth = on.container_env(AUTH);
    let rs = on.container_env(RS);
    let users = on.container_env(USERS);
    let nats_url = format!("nats://{NATS}:4222");
    assert_eq!(auth["AUTH__EVENTS__URL"], nats_url);
    assert_eq!(rs["RS__EVENTS__URL"], nats_url);
    assert_eq!(auth["AUTH__USERS__SOURCE"], "remote");
    let users_port = port_of(&users["USERS__SERVER__ADDR"]);
    assert_eq!(
        auth["AUTH__USERS__REMOTE_URL"],
        format!("http://{USERS}:{users_port}")
    );
    assert_eq!(on.exposed(USERS), BTreeSet::from([users_port]));
    assert_eq!(
        auth["AUTH__USERS__REMOTE_SECRET"],
        users["USERS__SERVICE__CLIENT_SECRET"]
    );
    assert!(users["USERS__SERVICE__CLIENT_SECRET"].len() >= 32);
    assert!(users["USERS__ADMIN__TOKEN"].len() >= 32);

    // The user service reports to the replicas' internal listener through the balancer, as
    // the client auth-setup-users registers (may report user events; converges on every
    // `up`), once that has run.
    let internal = port_of(&auth["AUTH__SERVER__INTERNAL_ADDR"]);
    assert_eq!(users["USERS__AUTH__URL"], format!("http://{LB}:{internal}"));
    let setup = on.service(SETUP_USERS);
    assert_eq!(setup["image"], on.service(AUTH)["image"]);
    assert_eq!(setup["depends_on"][AUTH]["condition"], "service_healthy");
    assert_eq!(
        on.service(USERS)["depends_on"][SETUP_USERS]["condition"],
        "service_completed_successfully"
    );
    let args = on.command(SETUP_USERS);
    assert_eq!(&args[..2], ["client", "create"]);
    assert!(args.contains(&"--user-events".into()) && args.contains(&"--update-existing".into()));
    assert!(!args.contains(&"--introspect".into()), "{args:?}");
    assert_eq!(
        arg_of(&args, "--client-id"),
        users["USERS__AUTH__CLIENT_ID"]
    );
    let setup_env = on.container_env(SETUP_USERS);
    assert_eq!(
        setup_env[&arg_of(&args, "--secret-env")],
        users["USERS__AUTH__CLIENT_SECRET"]
    );
    assert!(users["USERS__AUTH__CLIENT_SECRET"].len() >= 32);
    assert_eq!(setup_env["DATABASE_URL"], auth["DATABASE_URL"]);
    assert_eq!(setup_env["AUTH__KEYS__DIR"], auth["AUTH__KEYS__DIR"]);
    let keys_mount = |service: &str| {
        on.mounts(service)
            .into_iter()
            .find(|(_, target)| *target == auth["AUTH__KEYS__DIR"])
    };
    assert_eq!(
        keys_mount(SETUP_USERS).map(|m| m.0),
        keys_mount(AUTH).map(|m| m.0)
    );

    // The user service: one instance (its SQLite file is on one named volume).
    let data_dir = &users["USERS__DATA_DIR"];
    let data_mount = on
        .mounts(USERS)
        .into_iter()
        .find(|(_, target)| data_dir.starts_with(target.as_str()))
        .unwrap_or_else(|| panic!("USERS__DATA_DIR {data_dir} is not on a volume"));
    assert!(on.is_named_volume(&data_mount.0), "{data_mount:?}");
    assert!(!users.contains_key("USERS__DATABASE__URL"));
    assert!(
        on.service(USERS)["deploy"]["replicas"].is_null(),
        "SQLite: one instance"
    );

    // Its image: built from the same Dockerfile as the others, the same way.
    assert_eq!(on.service(USERS)["build"]["target"], USERS);
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    let stage = stages
        .iter()
        .find(|s| s.name == USERS)
        .expect("deploy/Dockerfile: no user-service stage");
    assert_eq!(stage.base, "runtime");
    assert!(stage.healthcheck, "{USERS}: no HEALTHCHECK");
    assert_eq!(stage.user.as_deref(), Some("app:app"));
    assert!(stage.entrypoint.as_deref().unwrap().contains(USERS));
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("COPY user-service-example user-service-example"));
    assert!(dockerfile.contains("--bin user-service"));
    assert!(dockerfile.contains(&format!(
        "http://127.0.0.1:{}/healthz",
        port_of(&stage.env["USERS__SERVER__ADDR"])
    )));
    assert!(dockerfile.contains(&format!("-o app -g app -m 0700 {data_dir}")));
}

/// An IPv4 network `a.b.c.d/len`: its address and mask.
fn ipv4_net(cidr: &str) -> (u32, u32) {
    let (net, len) = cidr.split_once('/').expect("CIDR");
    let net = u32::from(net.parse::<Ipv4Addr>().expect("IPv4 network"));
    let len: u32 = len.parse().unwrap();
    assert!((8..=30).contains(&len), "{cidr}");
    let mask = u32::MAX << (32 - len);
    assert_eq!(net & !mask, 0, "{cidr} is not a network address");
    (net, mask)
}

fn in_subnet(addr: &str, cidr: &str) -> bool {
    let (net, mask) = ipv4_net(cidr);
    u32::from(addr.parse::<Ipv4Addr>().expect("IPv4 address")) & mask == net
}

/// `addr` is not one of the addresses of `subnet` a container cannot be given: the network's
/// own address, its first (Docker's gateway) and its broadcast address.
fn assert_usable_host(addr: &str, subnet: &str) {
    let (net, mask) = ipv4_net(subnet);
    let a = u32::from(addr.parse::<Ipv4Addr>().expect("IPv4 address"));
    assert!(
        a != net && a != net + 1 && a != net | !mask,
        "{addr} is reserved in {subnet}"
    );
}

/// The binary's own list of settings, from `check-config` run with `env` (which must be a
/// valid configuration).
fn known_settings(bin: &Path, env: &Env, cwd: &Path) -> BTreeSet<String> {
    let out = Command::new(bin)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} check-config refused the compose environment: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .collect()
}

/// The variables of `env` the binary does not read, each with the reason.
fn unread_variables(service: &str, env: &Env, known: &BTreeSet<String>) -> Vec<String> {
    let prefix = match service {
        AUTH | SETUP | SETUP_USERS => "AUTH__",
        RS => "RS__",
        USERS => "USERS__",
        other => panic!("no binary for {other}"),
    };
    let others: Vec<&str> = ["AUTH__", "RS__", "USERS__"]
        .into_iter()
        .filter(|p| *p != prefix)
        .collect();
    let mut unread = Vec::new();
    for name in env.keys() {
        let setting = if name == "DATABASE_URL" && prefix == "AUTH__" {
            Some("database.url".to_string())
        } else {
            name.strip_prefix(prefix)
                .map(|rest| rest.to_ascii_lowercase().replace("__", "."))
        };
        match setting {
            Some(s) if known.contains(&s) => {}
            Some(s) => unread.push(format!("{name}: {service} has no setting {s}")),
            // env_logger reads it.
            None if name == "RUST_LOG" => {}
            None if others.iter().any(|o| name.starts_with(o)) => {
                unread.push(format!("{name}: belongs to the other service"))
            }
            None => unread.push(format!("{name}: {service} does not read it")),
        }
    }
    unread
}

/// A compose environment made runnable here. Returns the env and the ports it listens on,
/// keyed by (service, container port).
struct Mapped {
    env: Env,
    ports: BTreeMap<(String, u16), u16>,
}

fn map_environment(
    compose: &Compose,
    service: &str,
    root: &Path,
    db_url: &str,
    ports: &mut BTreeMap<(String, u16), u16>,
) -> Mapped {
    let mut env = Env::new();
    for (key, value) in compose.container_env(service) {
        let mapped = if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            check_database_url(compose, &value);
            db_url.to_string()
        } else if let Some((scheme, rest)) = ["http", "nats"]
            .into_iter()
            .find_map(|scheme| {
                value
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|rest| (scheme, rest))
            })
            .filter(|(_, rest)| !rest.starts_with("localhost:"))
        {
            // SCHEME://HOST:PORT[/path] where HOST is a compose service and PORT one of its
            // listeners. (http://localhost:… is the operator's view from the Docker host,
            // kept as it is.)
            let (authority, path) = match rest.split_once('/') {
                Some((authority, path)) => (authority, format!("/{path}")),
                None => (rest, String::new()),
            };
            let (host, port) = authority
                .split_once(':')
                .expect("URL with an explicit port");
            let port: u16 = port.parse().unwrap();
            compose.service(host);
            let local = ports.get(&(host.to_string(), port)).unwrap_or_else(|| {
                panic!("{service}: {key}={value} names {host}:{port}, where {host} does not listen")
            });
            format!("{scheme}://127.0.0.1:{local}{path}")
        } else if let Some((_, port)) = value.rsplit_once(':').filter(|(h, p)| {
            !h.contains('/') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        }) {
            // A listen address: a free port on loopback instead.
            let port: u16 = port.parse().unwrap();
            let local = *ports
                .entry((service.to_string(), port))
                .or_insert_with(free_port);
            format!("127.0.0.1:{local}")
        } else if compose.fixed_addresses().contains(&value) {
            // A service's fixed address on the compose network: loopback, as its name is.
            "127.0.0.1".to_string()
        } else if value.starts_with('/') {
            // A container path: the same path under a per-test root.
            root.join(value.trim_start_matches('/'))
                .display()
                .to_string()
        } else {
            value
        };
        env.insert(key, mapped);
    }
    Mapped {
        env,
        ports: ports.clone(),
    }
}

/// DATABASE_URL must name the compose database with its own user, password and database.
fn check_database_url(compose: &Compose, url: &str) {
    let rest = url.split_once("://").unwrap().1;
    let (userinfo, rest) = rest.rsplit_once('@').expect("credentials in DATABASE_URL");
    let (user, password) = userinfo.split_once(':').expect("user:password");
    let (hostport, db) = rest.split_once('/').expect("database name");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    let db_env = compose.environment(host);
    assert!(
        compose.service(host)["image"]
            .as_str()
            .unwrap()
            .starts_with("postgres:"),
        "DATABASE_URL host {host} is not the PostgreSQL service"
    );
    assert_eq!(port, "5432");
    assert_eq!(
        user,
        db_env
            .get("POSTGRES_USER")
            .map_or("postgres", String::as_str)
    );
    assert_eq!(password, db_env["POSTGRES_PASSWORD"]);
    assert_eq!(db, db_env.get("POSTGRES_DB").map_or(user, String::as_str));
}

fn mapped_stack_env(root: &Path, db_url: &str) -> (Compose, Mapped, Mapped) {
    let stack = MappedStack::new(Compose::load(), root, db_url, None);
    (stack.compose, stack.auth, stack.rs)
}

/// The environments of every service that runs one of the binaries, made runnable here.
struct MappedStack {
    compose: Compose,
    auth: Mapped,
    rs: Mapped,
    users: Mapped,
    setup: Mapped,
    setup_users: Mapped,
    /// Every local port, keyed by (service, container port).
    ports: BTreeMap<(String, u16), u16>,
}

impl MappedStack {
    /// `nats_port`: where the `nats` service's client port is here (a test's own server);
    /// without one, a free port nothing listens on.
    fn new(compose: Compose, root: &Path, db_url: &str, nats_port: Option<u16>) -> MappedStack {
        let mut ports = BTreeMap::new();
        // The balancer has no environment to map: free ports for its listeners.
        for port in compose.published(LB).union(&compose.exposed(LB)) {
            ports.insert((LB.to_string(), *port), free_port());
        }
        for port in compose.exposed(NATS) {
            ports.insert(
                (NATS.to_string(), port),
                nats_port.unwrap_or_else(free_port),
            );
        }
        // The user service first: the auth service's remote_url names its listener.
        let users = map_environment(&compose, USERS, root, db_url, &mut ports);
        let auth = map_environment(&compose, AUTH, root, db_url, &mut ports);
        let rs = map_environment(&compose, RS, root, db_url, &mut ports);
        let setup = map_environment(&compose, SETUP, root, db_url, &mut ports);
        let setup_users = map_environment(&compose, SETUP_USERS, root, db_url, &mut ports);
        MappedStack {
            compose,
            auth,
            rs,
            users,
            setup,
            setup_users,
            ports,
        }
    }

    fn local(&self, service: &str, port: u16) -> u16 {
        *self
            .ports
            .get(&(service.to_string(), port))
            .unwrap_or_else(|| panic!("{service}:{port} has no local port"))
    }
}

#[test]
fn every_compose_variable_is_read_by_its_binary() {
    let dir = tempfile::tempdir().unwrap();
    // As deploy/.env.example has it (profiles off), and with both profiles turned on.
    for compose in [Compose::load(), Compose::with_profiles()] {
        let stack = MappedStack::new(compose, dir.path(), "postgres://u:p@127.0.0.1:1/x", None);
        let compose = &stack.compose;
        let (auth, rs, users) = (&stack.auth.env, &stack.rs.env, &stack.users.env);
        let auth_known = known_settings(auth_service_bin(), auth, dir.path());
        let rs_known = known_settings(Path::new(RESOURCE_SERVICE_BIN), rs, dir.path());
        let users_known = known_settings(user_service_bin(), users, dir.path());
        assert!(auth_known.contains("tokens.access_ttl") && auth_known.contains("users.source"));
        assert!(rs_known.contains("auth.verify_url") && rs_known.contains("events.url"));
        assert!(users_known.contains("admin.token"));
        let mut unread = unread_variables(AUTH, auth, &auth_known);
        unread.extend(unread_variables(RS, rs, &rs_known));
        unread.extend(unread_variables(USERS, users, &users_known));
        // The one-shots run the auth-service binary; the variable a command names holds the
        // secret it registers.
        for (service, mapped) in [(SETUP, &stack.setup), (SETUP_USERS, &stack.setup_users)] {
            let mut setup_env = mapped.env.clone();
            let secret_var = arg_of(&compose.command(service), "--secret-env");
            assert!(
                setup_env.remove(&secret_var).is_some(),
                "{service} does not set {secret_var}"
            );
            unread.extend(unread_variables(service, &setup_env, &auth_known));
        }
        assert!(
            unread.is_empty(),
            "compose sets variables the binaries do not read:\n{}",
            unread.join("\n")
        );

        // The check itself catches what it is for.
        for (service, name, known) in [
            (AUTH, "AUTH__TOKENS__ACCES_TTL", &auth_known),
            (AUTH, "AUTH__TOKEN__ACCESS_TTL", &auth_known),
            (AUTH, "AUTH__USERS__REMOTE_SECRETS", &auth_known),
            (AUTH, "RS__AUTH__TIMEOUT", &auth_known),
            (AUTH, "USERS__ADMIN__TOKEN", &auth_known),
            (AUTH, "POSTGRES_PASSWORD", &auth_known),
            (RS, "RS__AUTH__VERIFYURL", &rs_known),
            (RS, "RS__EVENT__URL", &rs_known),
            (RS, "AUTH__SERVER__INTERNAL_ADDR", &rs_known),
            (RS, "DATABASE_URL", &rs_known),
            (USERS, "USERS__ADMIN__TOKENS", &users_known),
            (USERS, "USERS__AUTH__CLIENTID", &users_known),
            (USERS, "AUTH__USERS__REMOTE_URL", &users_known),
            (USERS, "DATABASE_URL", &users_known),
        ] {
            let env = env(&[(name, "x")]);
            assert_eq!(
                unread_variables(service, &env, known).len(),
                1,
                "{service}: {name}"
            );
        }
    }
}

/// deploy/.env.example's `change-me-…` values are long enough for every length check, and
/// public: an operator who copies the file and forgets one is stopped by the binary that
/// reads it, with the setting named and the value not shown.
#[test]
fn the_env_example_placeholders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Compose::with_profiles_as_shipped();
    let placeholders: Vec<String> = shipped
        .env_example
        .values()
        .filter(|v| v.contains(PLACEHOLDER))
        .cloned()
        .collect();
    assert!(placeholders.len() >= 4, "{placeholders:?}");
    let stack = MappedStack::new(shipped, dir.path(), "postgres://u:p@127.0.0.1:1/x", None);
    let refused = |bin: &Path, env: &Env, args: &[&str], setting: &str| {
        let out = Command::new(bin)
            .env_clear()
            .envs(env)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{} {args:?} accepted a placeholder",
            bin.display()
        );
        assert!(
            err.contains(&format!("{setting}: still the placeholder")),
            "{} {args:?}: {err}",
            bin.display()
        );
        for p in &placeholders {
            assert!(!err.contains(p), "{err}");
        }
    };
    let check = ["check-config"];
    refused(
        auth_service_bin(),
        &stack.auth.env,
        &check,
        "users.remote_secret",
    );
    // POSTGRES_PASSWORD reaches the auth service inside DATABASE_URL.
    let mut auth = stack.auth.env.clone();
    let url = stack.compose.container_env(AUTH)["DATABASE_URL"].clone();
    assert!(url.contains(PLACEHOLDER), "{url}");
    auth.insert("DATABASE_URL".into(), url);
    auth.insert(
        "AUTH__USERS__REMOTE_SECRET".into(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    refused(
        auth_service_bin(),
        &auth,
        &check,
        "database.url: the password",
    );
    refused(
        Path::new(RESOURCE_SERVICE_BIN),
        &stack.rs.env,
        &check,
        "auth.client_secret",
    );
    // The user service reads three: each is named in its turn, once the others are set.
    let user_secrets = [
        ("USERS__SERVICE__CLIENT_SECRET", "service.client_secret"),
        ("USERS__ADMIN__TOKEN", "admin.token"),
        ("USERS__AUTH__CLIENT_SECRET", "auth.client_secret"),
    ];
    for (var, setting) in user_secrets {
        assert!(stack.users.env[var].contains(PLACEHOLDER), "{var}");
        let mut env = stack.users.env.clone();
        for (other, _) in user_secrets.iter().filter(|(other, _)| *other != var) {
            env.insert(other.to_string(), uuid::Uuid::new_v4().simple().to_string());
        }
        refused(user_service_bin(), &env, &check, setting);
    }
    // The one-shots register the secret they are given: never a placeholder. (SQLite in the
    // test's directory: the refusal comes before anything is written.)
    for (service, mapped) in [(SETUP, &stack.setup), (SETUP_USERS, &stack.setup_users)] {
        let mut env = mapped.env.clone();
        env.remove("DATABASE_URL");
        env.insert(
            "AUTH__DATA_DIR".into(),
            dir.path().join(service).display().to_string(),
        );
        let command = stack.compose.command(service);
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        refused(auth_service_bin(), &env, &args, "client secret");
    }
}

/// `auth-lb`: deploy/nginx/lb.conf in a real nginx, in front of the one auth-service process,
/// on the local ports of the balancer's listeners.
async fn start_balancer(
    compose: &Compose,
    ports: &BTreeMap<(String, u16), u16>,
    dir: &Path,
) -> Nginx {
    let local = |service: &str, port: u16| ports[&(service.to_string(), port)];
    let auth = compose.container_env(AUTH);
    let public = port_of(&auth["AUTH__SERVER__PUBLIC_ADDR"]);
    let internal = port_of(&auth["AUTH__SERVER__INTERNAL_ADDR"]);
    let lb_ports: Vec<(u16, u16)> = compose
        .published(LB)
        .union(&compose.exposed(LB))
        .map(|p| (*p, local(LB, *p)))
        .collect();
    let conf = render_lb(
        &[
            (&format!("{AUTH}:{public}"), &[local(AUTH, public)]),
            (&format!("{AUTH}:{internal}"), &[local(AUTH, internal)]),
        ],
        &lb_ports,
    );
    let listen: Vec<u16> = lb_ports.iter().map(|(_, local)| *local).collect();
    Nginx::start(dir, &conf, &listen).await
}

/// Runs a one-shot service's command (the auth-service binary) with its mapped environment.
fn run_one_shot(compose: &Compose, service: &str, env: &Env, cwd: &Path) -> std::process::Output {
    let out = Command::new(auth_service_bin())
        .env_clear()
        .envs(env)
        .args(compose.command(service))
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[actix_web::test]
async fn compose_environment_runs_a_request_through() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path());
    let root = dir.path().join("rootfs");
    let (compose, auth, rs) = mapped_stack_env(&root, &db.url);
    // Docker creates mount targets; so does the test.
    for (_, target) in compose.mounts(AUTH) {
        std::fs::create_dir_all(root.join(target.trim_start_matches('/'))).unwrap();
    }
    let container_port = |service: &str, env_key: &str| -> u16 {
        compose.container_env(service)[env_key]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let local = |service: &str, port: u16| rs.ports[&(service.to_string(), port)];
    let auth_public = container_port(AUTH, "AUTH__SERVER__PUBLIC_ADDR");
    let auth_internal = container_port(AUTH, "AUTH__SERVER__INTERNAL_ADDR");
    let replica = format!("http://127.0.0.1:{}", local(AUTH, auth_public));
    let internal = format!("http://127.0.0.1:{}", local(AUTH, auth_internal));
    let rs_url = format!(
        "http://127.0.0.1:{}",
        local(RS, container_port(RS, "RS__SERVER__ADDR"))
    );

    let auth_service = Service::start(
        AUTH,
        auth_service_bin(),
        auth.env.clone(),
        dir.path(),
        vec![format!("{replica}/readyz"), format!("{internal}/healthz")],
    )
    .await;
    // auth-setup, once the replica is healthy: registers the resource service's client.
    let setup = map_environment(&compose, SETUP, &root, &db.url, &mut rs.ports.clone());
    let out = Command::new(auth_service_bin())
        .env_clear()
        .envs(&setup.env)
        .args(compose.command(SETUP))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{SETUP}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("created client resource-service-example (may: introspect)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The balancer: deploy/nginx/lb.conf in a real nginx, in front of this one replica, on the
    // ports compose gives it; clients and the resource service go through it.
    let nginx_dir = tempfile::tempdir().unwrap();
    let _lb = start_balancer(&compose, &rs.ports, nginx_dir.path()).await;
    let public_port = *compose.published(LB).first().expect("auth-lb publishes");
    let public = format!("http://127.0.0.1:{}", local(LB, public_port));
    let resource = Service::start(
        RS,
        Path::new(RESOURCE_SERVICE_BIN),
        rs.env.clone(),
        dir.path(),
        vec![format!("{rs_url}/healthz")],
    )
    .await;

    let client = reqwest::Client::new();
    let creds = json!({"username": "alice", "password": PASSWORD});
    let r = send(client.post(format!("{public}/register")).json(&creds)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The replica trusts the balancer's fixed address (here 127.0.0.1), so the client's
    // X-Forwarded-For, with the balancer's hop appended, names the client.
    let r = send(
        client
            .post(format!("{public}/login"))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&creds),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.str("access_token");
    let r = send(client.get(format!("{public}/me/sessions")).bearer_auth(&at)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sessions"][0]["ip"], "203.0.113.9", "{}", r.body);
    let r = send(
        client
            .post(format!("{rs_url}/posts"))
            .bearer_auth(&at)
            .json(&json!({"text": "through the compose wiring"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(client.get(format!("{rs_url}/posts")).bearer_auth(&at)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["posts"][0]["text"], "through the compose wiring");
    send(
        client
            .get(format!("{rs_url}/posts"))
            .bearer_auth("abc.def.ghi"),
    )
    .await
    .assert_unauthorized("invalid_token");

    // Discovery, fetched through the balancer, sends resource servers to the balancer's
    // internal listener, where introspection answers (here: asking for a client).
    let r = send(client.get(format!("{public}/.well-known/oauth-authorization-server"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let introspection = r.str("introspection_endpoint");
    assert_eq!(
        introspection,
        format!(
            "http://127.0.0.1:{}/oauth/introspect",
            local(LB, auth_internal)
        )
    );
    let r = send(client.post(&introspection).form(&[("token", at.as_str())])).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_client", "{}", r.body);

    // /verify itself, without the resource service's credentials: refused.
    let r = send(
        client
            .get(format!(
                "http://127.0.0.1:{}/verify",
                local(LB, auth_internal)
            ))
            .bearer_auth(&at),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_client", "{}", r.body);

    // The generated keys landed on the volume, where they survive the container.
    let keys: PathBuf = PathBuf::from(&auth.env["AUTH__KEYS__DIR"]);
    assert!(keys.join("access-eddsa.pem").exists() && keys.join("refresh-hs256.secret").exists());
    let rs_secret = compose.container_env(RS)["RS__AUTH__CLIENT_SECRET"].clone();
    auth_service.assert_never_logged(&[&at, &rs_secret]);
    resource.assert_never_logged(&[&at, &rs_secret]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&rs_secret));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&rs_secret));
}

/// Polls `check` every 50 ms until it returns `Some`, failing with `what` after `within`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => sleep_secs(0.05).await,
        }
    }
}

/// Both profiles on, as deploy/.env.example says to turn them on: the user service (its
/// compose environment), the auth service in remote mode publishing its events, the resource
/// service reading them, and the one-shots. A NATS server of the test's own (JetStream, a
/// store of its own) stands in for the `nats` service, so the stream and subjects are the
/// compose defaults without sharing them with any other test. Registering and logging in
/// through the balancer go to the user service; disabling the user at the user service's
/// admin API ends the session at the auth service (the report), and its event reaches the
/// resource service, which refuses the token although its cached answer would still be good.
#[actix_web::test]
async fn compose_profiles_end_a_disabled_users_token_at_the_resource_service() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path());
    let nats = NatsServer::start();
    let root = dir.path().join("rootfs");
    let stack = MappedStack::new(Compose::with_profiles(), &root, &db.url, Some(nats.port));
    let compose = &stack.compose;
    for service in [AUTH, USERS] {
        for (_, target) in compose.mounts(service) {
            std::fs::create_dir_all(root.join(target.trim_start_matches('/'))).unwrap();
        }
    }
    let listener = |service: &str, key: &str, env_of: &str| {
        let port = port_of(&compose.container_env(env_of)[key]);
        format!("http://127.0.0.1:{}", stack.local(service, port))
    };
    let replica = listener(AUTH, "AUTH__SERVER__PUBLIC_ADDR", AUTH);
    let internal = listener(AUTH, "AUTH__SERVER__INTERNAL_ADDR", AUTH);
    let users_url = listener(USERS, "USERS__SERVER__ADDR", USERS);
    let rs_url = listener(RS, "RS__SERVER__ADDR", RS);
    let public = listener(LB, "AUTH__SERVER__PUBLIC_ADDR", AUTH);
    assert_eq!(stack.auth.env["AUTH__USERS__SOURCE"], "remote");
    assert_eq!(stack.auth.env["AUTH__EVENTS__URL"], nats.url());
    assert_eq!(stack.rs.env["RS__EVENTS__URL"], nats.url());
    assert_eq!(stack.auth.env["AUTH__USERS__REMOTE_URL"], users_url);

    // Start-up in compose's order: the replica, then the one-shots, the balancer, the user
    // service and the resource service.
    let auth = Service::start(
        AUTH,
        auth_service_bin(),
        stack.auth.env.clone(),
        dir.path(),
        vec![format!("{replica}/readyz"), format!("{internal}/healthz")],
    )
    .await;
    let setup = run_one_shot(compose, SETUP, &stack.setup.env, dir.path());
    let setup_users = run_one_shot(compose, SETUP_USERS, &stack.setup_users.env, dir.path());
    assert!(
        String::from_utf8_lossy(&setup_users.stdout)
            .contains("created client user-service (may: user events)"),
        "{}",
        String::from_utf8_lossy(&setup_users.stdout)
    );
    let nginx_dir = tempfile::tempdir().unwrap();
    let _lb = start_balancer(compose, &stack.ports, nginx_dir.path()).await;
    let users = Service::start(
        USERS,
        user_service_bin(),
        stack.users.env.clone(),
        dir.path(),
        vec![format!("{users_url}/healthz")],
    )
    .await;
    let resource = Service::start(
        RS,
        Path::new(RESOURCE_SERVICE_BIN),
        stack.rs.env.clone(),
        dir.path(),
        vec![format!("{rs_url}/healthz")],
    )
    .await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let events_status = || async {
        let r = send(client.get(format!("{rs_url}/events/status"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    wait_for(
        "the resource service subscribed",
        Duration::from_secs(20),
        || async {
            let status = events_status().await;
            if status["subscribed"] == true {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;

    // Registered through the balancer: the user lives in the user service.
    let creds = json!({"username": "alice", "password": PASSWORD});
    let r = send(client.post(format!("{public}/register")).json(&creds)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("id");
    let admin_token = compose.container_env(USERS)["USERS__ADMIN__TOKEN"].clone();
    let admin = |method: reqwest::Method, path: String| {
        client
            .request(method, format!("{users_url}{path}"))
            .bearer_auth(&admin_token)
    };
    let r = send(admin(reqwest::Method::GET, format!("/admin/users/{id}"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["username"], "alice");
    assert_eq!(r.body["disabled"], false);

    let r = send(client.post(format!("{public}/login")).json(&creds)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.str("access_token");
    assert_eq!(sub_of(&at), id);
    // Once the resource service trusts the events (it keeps answers only while they flow),
    // the answer is kept, for RS__AUTH__CACHE_TTL's default with events, 30 s: from then on
    // only the event can end it within the deadline below.
    let status = wait_for("an answer kept", Duration::from_secs(20), || async {
        let r = send(client.get(format!("{rs_url}/posts")).bearer_auth(&at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let status = events_status().await;
        if status["cache_entries"] == 1 {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await;
    let applied_before = status["applied"].as_u64().unwrap();

    // Disabled at the user service: reported to the auth service through the balancer,
    // which ends alice's sessions; the event reaches the resource service.
    let r = send(admin(
        reqwest::Method::POST,
        format!("/admin/users/{id}/disable"),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["disabled"], true);
    wait_for(
        "the resource service refused the token",
        Duration::from_secs(15),
        || async {
            let r = send(client.get(format!("{rs_url}/posts")).bearer_auth(&at)).await;
            match r.status.as_u16() {
                401 => Ok(r),
                200 => Err(r.body.to_string()),
                other => panic!("{other}: {}", r.body),
            }
        },
    )
    .await
    .assert_unauthorized("token_revoked");
    // Counted just after the answer was dropped.
    wait_for("the event counted", Duration::from_secs(5), || async {
        let status = events_status().await;
        if status["applied"].as_u64().unwrap() > applied_before
            && status["dropped_entries"].as_u64().unwrap() >= 1
        {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    // The auth service asks the user service at login: a disabled user cannot log in.
    let r = send(client.post(format!("{public}/login")).json(&creds)).await;
    assert_eq!(r.status, 401, "{}", r.body);

    let secrets: Vec<String> = [
        (AUTH, "AUTH__USERS__REMOTE_SECRET"),
        (USERS, "USERS__AUTH__CLIENT_SECRET"),
        (USERS, "USERS__ADMIN__TOKEN"),
        (RS, "RS__AUTH__CLIENT_SECRET"),
    ]
    .iter()
    .map(|(service, key)| compose.container_env(service)[*key].clone())
    .chain([at.clone(), PASSWORD.to_string()])
    .collect();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    for service in [&auth, &users, &resource] {
        service.assert_never_logged(&secrets);
    }
    for out in [&setup, &setup_users] {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(secrets.iter().all(|s| !text.contains(s)));
        }
    }
}

#[test]
fn interpolation_follows_compose_rules() {
    let vars: BTreeMap<String, String> = [("SET", "v"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut used = BTreeSet::new();
    let mut i = |s: &str| interpolate(s, &vars, &mut used);
    assert_eq!(i("a${SET}b$SET/$$x").unwrap(), "avbv/$x");
    assert_eq!(
        i("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}").unwrap(),
        "d d  d"
    );
    assert!(i("${EMPTY:?needed}").is_err());
    assert_eq!(i("${EMPTY?needed}").unwrap(), "");
    assert!(i("${UNSET?needed}").is_err());
    assert!(i("${SET").is_err());
    assert_eq!(
        used,
        BTreeSet::from(["SET".to_string(), "EMPTY".to_string(), "UNSET".to_string()])
    );
}
