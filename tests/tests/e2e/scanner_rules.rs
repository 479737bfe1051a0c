//! The published scanner rules (`scanners/`), checked with an RE2-compatible engine (Rust's
//! `regex`: no look-around, no back-references, as gitleaks, TruffleHog and GitHub need):
//! each finds every generated key whole and nothing of the near-misses; the checksum validator
//! agrees with the service's own parser.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use iam_shared::api_key::ApiKey;
use regex::Regex;
use secrecy::ExposeSecret;

fn scanners(file: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scanners").join(file)).unwrap()
}

/// Each published expression, compiled, with the capture group that holds the key.
fn rules() -> Vec<(&'static str, Regex)> {
    let gitleaks = scanners("gitleaks.toml");
    let gitleaks =
        gitleaks.lines().find_map(|l| l.strip_prefix("regex = '''")).and_then(|l| l.strip_suffix("'''")).expect("gitleaks regex");
    let trufflehog: serde_json::Value = serde_norway::from_str(&scanners("trufflehog.yaml")).unwrap();
    let trufflehog = trufflehog["detectors"][0]["regex"]["key"].as_str().unwrap().to_owned();
    let github: serde_json::Value = serde_norway::from_str(&scanners("github-custom-pattern.yaml")).unwrap();
    let github = format!(
        "(?:{})({})(?:{})",
        github["before_secret"].as_str().unwrap(),
        github["secret_format"].as_str().unwrap(),
        github["after_secret"].as_str().unwrap()
    );
    vec![
        ("gitleaks", Regex::new(gitleaks).unwrap()),
        ("trufflehog", Regex::new(&trufflehog).unwrap()),
        ("github", Regex::new(&github).unwrap()),
    ]
}

fn found(rule: &Regex, text: &str) -> Vec<String> {
    rule.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

fn generated(n: usize) -> Vec<String> {
    (0..n).map(|_| ApiKey::generate().to_secret_string().expose_secret().to_owned()).collect()
}

#[test]
fn every_rule_finds_every_key_whole_in_its_usual_settings() {
    for key in generated(200) {
        for (name, rule) in rules() {
            for setting in [
                key.clone(),
                format!("INFUSE_API_KEY={key}"),
                format!("export KEY=\"{key}\"\n"),
                format!("{{\"apiKey\": \"{key}\"}}"),
                format!("curl -u {}:{} …", &key[..25], &key[26..]),
                format!("Authorization: Bearer {key}"),
            ] {
                let hits = found(&rule, &setting);
                if setting.contains(&key) {
                    assert_eq!(hits, vec![key.clone()], "{name} in {setting:?}");
                } else {
                    assert!(hits.is_empty(), "{name}: the Basic form splits the key, which is not one token: {hits:?}");
                }
            }
        }
    }
}

#[test]
fn no_rule_matches_a_near_miss() {
    let key = generated(1).remove(0);
    let (id, secret) = key.split_once('.').unwrap();
    let near_misses = [
        key.replacen("ik_", "ik-", 1),
        key.replacen("ik_", "IK_", 1),
        format!("{}.{secret}", &id[..id.len() - 1]),
        format!("{id}.{}", &secret[..secret.len() - 1]),
        format!("{id}{secret}"),
        format!("{id}.{}-{}", &secret[..20], &secret[21..]),
        format!("x{key}"),
        format!("{key}x"),
        format!("{key}_1"),
        format!("{id}A.{secret}"),
    ];
    for (name, rule) in rules() {
        for miss in &near_misses {
            assert!(found(&rule, miss).is_empty(), "{name} matched the near-miss {miss:?}");
        }
    }
}

#[test]
fn the_validator_agrees_with_the_service() {
    let keys = generated(50);
    // The shape without the checksum: one character of each key changed.
    let broken: Vec<String> = keys
        .iter()
        .map(|k| {
            let last = k.chars().last().unwrap();
            format!("{}{}", &k[..k.len() - 1], if last == 'A' { 'B' } else { 'A' })
        })
        .collect();
    let validate = |candidates: &[String]| {
        let mut child = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scanners/validate_key.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        child.stdin.take().unwrap().write_all(candidates.join("\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    let (ok, printed) = validate(&keys);
    assert!(ok, "{printed}");
    assert_eq!(printed.lines().filter(|l| l.ends_with(" valid")).count(), keys.len());
    let (ok, printed) = validate(&broken);
    assert!(!ok);
    for (line, candidate) in printed.lines().zip(&broken) {
        assert_eq!(line.ends_with(" invalid"), ApiKey::parse(candidate).is_err(), "{line}");
    }
    assert!(keys.iter().all(|k| !printed.contains(k.split_once('.').unwrap().1)), "the validator never prints a secret");
    let (ok, printed) = validate(&[scanners("github-custom-pattern.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("test_string: 'INFUSE_API_KEY="))
        .unwrap()
        .trim_end_matches('\'')
        .to_owned()]);
    assert!(ok, "GitHub's test string is a well-formed key: {printed}");
}
