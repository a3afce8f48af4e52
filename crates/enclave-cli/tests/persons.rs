//! `enclave anonymize-persons` on synthetic longitudinal data (issue #12; R-AN-1, R-AN-2):
//! 250,000 persons with about 5.8 million event rows from `enclave synth`. The checks here
//! do not use the anonymizer's code: they read the released files, rebuild each person's
//! quasi-identifiers from what a reader of the release sees (the person row and the codes of
//! that person's released events) and count the persons alike. The same data anonymized
//! row by row, as the reference tools would, is shown to leave persons with fewer than k
//! look-alikes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;

const K: usize = 5;
const PERSONS: u64 = 250_000;
/// The synthetic person table's identifying columns (and its summaries of the events, which
/// the event sets replace), left out of every release.
const DROP: &str = "family_name,given_name,family_kana,given_kana,birth_date,prefecture,city,\
                    phone,insurer_number,insured_symbol,insured_number,primary_icd10,conditions,\
                    encounters,institutions";
/// The synthetic person table's body and lab columns, released as they are.
const KEEP: &str = "height_cm,weight_kg,bmi,sbp,dbp,hba1c,ldl,hdl,tg,egfr";
const SECRET: &str = "5e1ec7ed0000000000000000000000000000000000000000000000000000c0de";

fn enclave<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(dir: &Path, args: &[S]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run enclave");
    assert!(
        out.status.success(),
        "enclave {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reader(path: &Path, delimiter: u8) -> csv::Reader<fs::File> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn column(r: &mut csv::Reader<fs::File>, name: &str) -> usize {
    r.headers()
        .expect("header")
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// The release key of an id, computed here from its published definition.
fn release_key(id: &str) -> String {
    let secret = hex::decode(SECRET).expect("hex");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut msg = b"enclave-person-key-v1\0".to_vec();
    msg.extend_from_slice(id.as_bytes());
    hex::encode(&ring::hmac::sign(&key, &msg).as_ref()[..16])
}

fn days(date: &str) -> i64 {
    // Days from a fixed origin; only differences are used.
    let y: i64 = date[..4].parse().expect("year");
    let m: i64 = date[5..7].parse().expect("month");
    let d: i64 = date[8..].parse().expect("day");
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + d
}

/// `enclave anonymize-persons` over `persons` and `events` with age, sex and postal code as
/// quasi-identifiers, the diagnoses as the event set, `drop` left out and the body and lab
/// columns kept; `extra` says the rest.
fn persons_args(persons: &str, events: &str, drop: &str, extra: &[&str]) -> Vec<String> {
    [
        "anonymize-persons",
        "--persons",
        persons,
        "--events",
        events,
        "--qi",
        "age=age.csv",
        "--qi",
        "sex=sex.csv",
        "--qi",
        "postal_code=postal_code.csv",
        "--drop",
        drop,
        "--event-set",
        "dx=icd10.csv",
        "--keep",
        KEEP,
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect()
}

/// Hierarchies for age, sex, postal code (from `persons`) and ICD-10 (the dx codes of
/// `events`), built by `enclave hierarchy` into `dir`.
fn hierarchies(dir: &Path, persons: &str, events: &str) {
    for (column, kind) in [
        ("age", "--interval=5,10,20"),
        ("sex", "--mask=1"),
        ("postal_code", "--mask=2,4,7"),
    ] {
        enclave(
            dir,
            &[
                "hierarchy",
                "--input",
                persons,
                "--delimiter",
                ",",
                "--column",
                column,
                kind,
                "--out",
                &format!("{column}.csv"),
            ],
        );
    }
    enclave(
        dir,
        &[
            "hierarchy",
            "--input",
            events,
            "--delimiter",
            ",",
            "--column",
            "code",
            "--where",
            "kind=dx",
            "--icd10",
            "--out",
            "icd10.csv",
        ],
    );
}

/// Persons grouped by `signature`; returns how many persons are in classes smaller than k.
fn persons_below_k(signatures: &HashMap<String, String>) -> (usize, usize) {
    let mut sizes: HashMap<&str, usize> = HashMap::new();
    for s in signatures.values() {
        *sizes.entry(s).or_default() += 1;
    }
    let below = signatures
        .values()
        .filter(|s| sizes[s.as_str()] < K)
        .count();
    (below, sizes.len())
}

#[test]
fn person_level_k_holds_for_every_person_and_row_level_does_not() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let n = PERSONS.to_string();
    enclave(
        d,
        &[
            "synth",
            "--persons",
            &n,
            "--seed",
            "11",
            "--formats",
            "flat,events",
            "--out",
            "syn",
        ],
    );
    let persons = d.join("syn/flat/persons.csv");
    let events = d.join("syn/events/events.csv");
    hierarchies(d, "syn/flat/persons.csv", "syn/events/events.csv");
    fs::write(d.join("secret.hex"), SECRET).expect("secret");

    // What went in: every person's QIs and dated diagnosis codes.
    let mut input_qis: HashMap<String, [String; 3]> = HashMap::new();
    {
        let mut r = reader(&persons, b',');
        let c: Vec<usize> = ["person_id", "age", "sex", "postal_code"]
            .iter()
            .map(|n| column(&mut r, n))
            .collect();
        for rec in r.records() {
            let rec = rec.expect("row");
            input_qis.insert(
                rec[c[0]].to_owned(),
                [rec[c[1]].into(), rec[c[2]].into(), rec[c[3]].into()],
            );
        }
    }
    let mut input_dx: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut event_rows = 0u64;
    {
        let mut r = reader(&events, b',');
        let c: Vec<usize> = ["person_id", "date", "kind", "code"]
            .iter()
            .map(|n| column(&mut r, n))
            .collect();
        for rec in r.records() {
            let rec = rec.expect("row");
            event_rows += 1;
            if &rec[c[2]] == "dx" {
                input_dx
                    .entry(rec[c[0]].to_owned())
                    .or_default()
                    .push((rec[c[1]].to_owned(), rec[c[3]].to_owned()));
            }
        }
    }
    assert_eq!(input_qis.len() as u64, PERSONS);
    assert!(event_rows >= 5_000_000, "only {event_rows} event rows");

    // The product.
    let started = std::time::Instant::now();
    let said = enclave(
        d,
        &persons_args(
            "syn/flat/persons.csv",
            "syn/events/events.csv",
            DROP,
            &[
                "--shift-dates",
                "date",
                "--max-shift-days",
                "30",
                "--drop-events",
                "institution",
                "--keep-events",
                "value",
                "--k",
                "5",
                "--suppression-limit",
                "0.05",
                "--key-file",
                "secret.hex",
                "--output-persons",
                "persons-out.csv",
                "--output-events",
                "events-out.csv",
                "--report",
                "report.json",
            ],
        ),
    );
    let seconds = started.elapsed().as_secs_f64();

    // What came out, read as a recipient reads it.
    let mut released: HashMap<String, [String; 3]> = HashMap::new();
    let mut released_set_column: HashMap<String, String> = HashMap::new();
    {
        let mut r = reader(&d.join("persons-out.csv"), b',');
        let header: Vec<String> = r.headers().expect("h").iter().map(str::to_owned).collect();
        for forbidden in [
            "family_name",
            "phone",
            "birth_date",
            "conditions",
            "insured_number",
        ] {
            assert!(
                !header.iter().any(|h| h == forbidden),
                "{forbidden} released"
            );
        }
        let c: Vec<usize> = ["person_id", "age", "sex", "postal_code", "dx_codes"]
            .iter()
            .map(|n| column(&mut r, n))
            .collect();
        for rec in r.records() {
            let rec = rec.expect("row");
            let key = rec[c[0]].to_owned();
            assert!(!input_qis.contains_key(&key), "an original id was released");
            released_set_column.insert(key.clone(), rec[c[4]].to_owned());
            let prev = released.insert(key, [rec[c[1]].into(), rec[c[2]].into(), rec[c[3]].into()]);
            assert!(prev.is_none(), "a release key appears twice");
        }
    }
    let mut released_dx: HashMap<String, Vec<(String, String)>> = HashMap::new();
    {
        let mut r = reader(&d.join("events-out.csv"), b',');
        let header: Vec<String> = r.headers().expect("h").iter().map(str::to_owned).collect();
        assert!(
            !header.iter().any(|h| h == "institution"),
            "dropped column released"
        );
        let c: Vec<usize> = ["person_id", "date", "kind", "code"]
            .iter()
            .map(|n| column(&mut r, n))
            .collect();
        for rec in r.records() {
            let rec = rec.expect("row");
            assert_eq!(&rec[c[2]], "dx", "an undeclared event kind was released");
            let key = &rec[c[0]];
            assert!(
                released.contains_key(key),
                "an event row of a person not in the released person table"
            );
            released_dx
                .entry(key.to_owned())
                .or_default()
                .push((rec[c[1]].to_owned(), rec[c[3]].to_owned()));
        }
    }

    // k holds for every released person, over the person's QIs and the set of codes their
    // released events carry.
    let mut signatures: HashMap<String, String> = HashMap::new();
    for (key, qis) in &released {
        let codes: BTreeSet<&str> = released_dx
            .get(key)
            .map(|v| v.iter().map(|(_, c)| c.as_str()).collect())
            .unwrap_or_default();
        let set = codes.into_iter().collect::<Vec<_>>().join("|");
        let column = &released_set_column[key];
        assert!(
            *column == set || (set.is_empty() && column == "-"),
            "person {key}: dx_codes {column:?} but events carry {set:?}"
        );
        signatures.insert(
            key.clone(),
            format!("{}\t{}\t{}\t{set}", qis[0], qis[1], qis[2]),
        );
    }
    let (below, classes) = persons_below_k(&signatures);
    assert_eq!(
        below, 0,
        "persons with fewer than {K} look-alikes in the release"
    );
    // No released code is a unique description: each is carried by at least k persons, and
    // the report's figure is the one the output shows.
    let mut holders: HashMap<&str, usize> = HashMap::new();
    for rows in released_dx.values() {
        let codes: BTreeSet<&str> = rows.iter().map(|(_, c)| c.as_str()).collect();
        for c in codes {
            *holders.entry(c).or_default() += 1;
        }
    }
    let rarest = holders.values().copied().min().expect("codes released");

    // Suppressed persons leave nothing; released persons lose no diagnosis and keep the
    // intervals between their events.
    let key_of: HashMap<String, String> = input_qis
        .keys()
        .map(|id| (release_key(id), id.clone()))
        .collect();
    let mut suppressed = 0usize;
    for (key, id) in &key_of {
        if !released.contains_key(key) {
            suppressed += 1;
            assert!(
                !released_dx.contains_key(key),
                "events of suppressed person {id}"
            );
        }
    }
    assert_eq!(suppressed + released.len(), PERSONS as usize);
    assert!(suppressed as f64 <= 0.05 * PERSONS as f64);
    for (key, out) in &released_dx {
        let id = key_of.get(key).expect("every key is some input person's");
        let inp = &input_dx[id];
        assert_eq!(
            inp.len(),
            out.len(),
            "person {id}: diagnosis rows lost or added"
        );
        let shift = days(&out[0].0) - days(&inp[0].0);
        assert!(shift.abs() <= 30, "person {id}: shifted by {shift} days");
        for (a, b) in inp.iter().zip(out) {
            assert_eq!(
                days(&b.0) - days(&a.0),
                shift,
                "person {id}: an interval changed"
            );
        }
    }
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["persons"]["persons_suppressed"], suppressed as u64);
    assert!(
        rarest >= K,
        "a released code is held by only {rarest} persons"
    );
    let set = &report["persons"]["event_sets"][0];
    assert_eq!(set["min_persons_per_code"], rarest as u64);
    assert_eq!(set["released_codes"], holders.len() as u64);
    assert_eq!(set["codes_held_by_fewer_than_k"], 0);
    // The plain report says it per person, in both languages.
    let ja = enclave(d, &["explain", "--lang", "ja", "report.json"]);
    let en = enclave(d, &["explain", "--lang", "en", "report.json"]);
    let digits = rarest.to_string();
    let grouped: String = digits
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let comma = i > 0 && (digits.len() - i).is_multiple_of(3);
            comma.then_some(',').into_iter().chain(std::iter::once(c))
        })
        .collect();
    let rarest_text = format!("少なくとも {grouped}人");
    assert!(
        ja.contains(&rarest_text) && ja.contains("一人ひとりの再識別リスク"),
        "{ja}"
    );
    assert!(
        en.contains("per person") && en.contains("Dates (date)"),
        "{en}"
    );
    assert_eq!(
        report["min_class"].as_u64().map(|m| m >= K as u64),
        Some(true)
    );

    // The same data anonymized row by row: one row per diagnosis with its person's QIs, the
    // person id kept so a researcher can follow a person (as a longitudinal release must).
    let mut table = String::from("person_id;age;sex;postal_code;code\n");
    let mut ids: Vec<&String> = input_dx.keys().collect();
    ids.sort();
    for id in ids {
        let q = &input_qis[id];
        for (_, code) in &input_dx[id] {
            table.push_str(&format!("{id};{};{};{};{code}\n", q[0], q[1], q[2]));
        }
    }
    fs::write(d.join("rows.csv"), table).expect("rows");
    enclave(
        d,
        &[
            "anonymize",
            "--input",
            "rows.csv",
            "--qi",
            "age=age.csv",
            "--qi",
            "sex=sex.csv",
            "--qi",
            "postal_code=postal_code.csv",
            "--qi",
            "code=icd10.csv",
            "--k",
            "5",
            "--suppression-limit",
            "0.05",
            "--output",
            "rows-out.csv",
            "--report",
            "rows-report.json",
        ],
    );
    let mut naive: HashMap<String, ([String; 3], BTreeSet<String>)> = HashMap::new();
    let mut rows_below_k_classes = HashSet::new();
    {
        let mut r = reader(&d.join("rows-out.csv"), b';');
        for rec in r.records() {
            let rec = rec.expect("row");
            if rec[1] == *"*" && rec[2] == *"*" && rec[3] == *"*" && rec[4] == *"*" {
                continue; // suppressed row
            }
            rows_below_k_classes.insert(rec.iter().skip(1).collect::<Vec<_>>().join(";"));
            let e = naive.entry(rec[0].to_owned()).or_insert_with(|| {
                (
                    [rec[1].into(), rec[2].into(), rec[3].into()],
                    BTreeSet::new(),
                )
            });
            e.1.insert(rec[4].to_owned());
        }
    }
    let naive_signatures: HashMap<String, String> = naive
        .into_iter()
        .map(|(id, (q, codes))| {
            let set = codes.into_iter().collect::<Vec<_>>().join("|");
            (id, format!("{}\t{}\t{}\t{set}", q[0], q[1], q[2]))
        })
        .collect();
    let (naive_below, naive_classes) = persons_below_k(&naive_signatures);
    println!(
        "person-level: {} of {PERSONS} persons released in {classes} classes, {suppressed} \
         suppressed, {} diagnosis rows, {seconds:.1} s; row-level on the same data: {} persons \
         in {naive_classes} person classes, {naive_below} of them with fewer than {K} \
         look-alikes\n{said}",
        released.len(),
        released_dx.values().map(Vec::len).sum::<usize>(),
        naive_signatures.len(),
    );
    assert!(
        naive_below > 0,
        "row-level k-anonymity happened to protect every person on this data"
    );
}

/// Runs `enclave` expecting failure; returns stderr.
fn enclave_fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(dir: &Path, args: &[S]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run enclave");
    assert!(!out.status.success(), "enclave {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Per column, original value → released value, paired through the release keys: the QIs
/// of the person table and the diagnosis codes (column `dx`).
fn applied_mapping(dir: &Path, delivery: &str, out: &str) -> HashMap<(String, String), String> {
    let mut key_of: HashMap<String, String> = HashMap::new();
    let mut qis: HashMap<String, Vec<String>> = HashMap::new();
    let mut r = reader(&dir.join(delivery).join("flat/persons.csv"), b',');
    let c: Vec<usize> = ["person_id", "age", "sex", "postal_code"]
        .iter()
        .map(|n| column(&mut r, n))
        .collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        key_of.insert(release_key(&rec[c[0]]), rec[c[0]].to_owned());
        qis.insert(
            rec[c[0]].to_owned(),
            c[1..].iter().map(|&i| rec[i].to_owned()).collect(),
        );
    }
    let mut map: HashMap<(String, String), String> = HashMap::new();
    let mut put = |column: &str, original: &str, released: &str| {
        let prev = map.insert((column.into(), original.into()), released.into());
        assert!(
            prev.is_none_or(|p| p == released),
            "{column} {original} released as two values within one delivery"
        );
    };
    let mut r = reader(&dir.join(format!("{out}-persons.csv")), b',');
    let o: Vec<usize> = ["person_id", "age", "sex", "postal_code"]
        .iter()
        .map(|n| column(&mut r, n))
        .collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        let id = &key_of[&rec[o[0]]];
        for (j, name) in ["age", "sex", "postal_code"].iter().enumerate() {
            put(name, &qis[id][j], &rec[o[j + 1]]);
        }
    }
    // Diagnosis codes: a person's released dx rows are their input dx rows, in order.
    let mut input_dx: HashMap<String, Vec<String>> = HashMap::new();
    let mut r = reader(&dir.join(delivery).join("events/events.csv"), b',');
    let (ci, ck, cc) = (
        column(&mut r, "person_id"),
        column(&mut r, "kind"),
        column(&mut r, "code"),
    );
    for rec in r.records() {
        let rec = rec.expect("row");
        if &rec[ck] == "dx" {
            input_dx
                .entry(rec[ci].to_owned())
                .or_default()
                .push(rec[cc].to_owned());
        }
    }
    let mut released_dx: HashMap<String, Vec<String>> = HashMap::new();
    let mut r = reader(&dir.join(format!("{out}-events.csv")), b',');
    let (ci, cc) = (column(&mut r, "person_id"), column(&mut r, "code"));
    for rec in r.records() {
        let rec = rec.expect("row");
        released_dx
            .entry(rec[ci].to_owned())
            .or_default()
            .push(rec[cc].to_owned());
    }
    for (key, codes) in &released_dx {
        let original = &input_dx[&key_of[key]];
        assert_eq!(original.len(), codes.len());
        for (o, c) in original.iter().zip(codes) {
            put("dx", o, c);
        }
    }
    map
}

#[test]
fn a_recipe_replays_on_the_next_delivery_and_refuses_one_that_breaks_the_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for (name, seed) in [("a", "21"), ("b", "22")] {
        enclave(
            d,
            &[
                "synth",
                "--persons",
                "60000",
                "--seed",
                seed,
                "--formats",
                "flat,events",
                "--out",
                name,
            ],
        );
    }
    // Hierarchies cover the domain of both deliveries (an operator builds them from the
    // code lists, not from one delivery).
    for (table, file) in [
        ("flat/persons.csv", "union-persons.csv"),
        ("events/events.csv", "union-events.csv"),
    ] {
        let a = fs::read_to_string(d.join("a").join(table)).expect("a");
        let b = fs::read_to_string(d.join("b").join(table)).expect("b");
        let body = b.split_once('\n').expect("header").1;
        fs::write(d.join(file), a + body).expect("union");
    }
    hierarchies(d, "union-persons.csv", "union-events.csv");
    fs::write(d.join("secret.hex"), SECRET).expect("secret");
    let said = enclave(
        d,
        &persons_args(
            "a/flat/persons.csv",
            "a/events/events.csv",
            DROP,
            &[
                "--keep-events",
                "date,institution,value",
                "--k",
                "5",
                "--suppression-limit",
                "0.05",
                "--key-file",
                "secret.hex",
                "--recipe-out",
                "recipe.json",
                "--mapping-out",
                "map-a.csv",
                "--output-persons",
                "a-persons.csv",
                "--output-events",
                "a-events.csv",
                "--report",
                "a.json",
            ],
        ),
    );
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("recipe "))
        .and_then(|l| l.split_whitespace().next())
        .expect("recipe id printed")
        .to_owned();
    // The hierarchy files may change on disk afterwards: the recipe holds their text.
    fs::write(d.join("age.csv"), "garbage").expect("overwrite");

    let apply = |persons: &str, events: &str, out: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "apply-recipe",
            "--recipe",
            "recipe.json",
            "--expect-id",
            &id,
            "--persons",
            persons,
            "--events",
            events,
            "--key-file",
            "secret.hex",
            "--output-persons",
            &format!("{out}-persons.csv"),
            "--output-events",
            &format!("{out}-events.csv"),
            "--report",
            &format!("{out}.json"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let args = apply(
        "b/flat/persons.csv",
        "b/events/events.csv",
        "b",
        &["--mapping-out", "map-b.csv"],
    );
    enclave(d, &args);

    // Same mapping on every value the two deliveries share, read from the data.
    let ma = applied_mapping(d, "a", "a");
    let mb = applied_mapping(d, "b", "b");
    let mut shared = 0;
    for (k, v) in &ma {
        if let Some(w) = mb.get(k) {
            assert_eq!(v, w, "{} {} released as {v} in A, {w} in B", k.0, k.1);
            shared += 1;
        }
    }
    assert!(shared > 1000, "only {shared} shared values");
    assert_eq!(
        fs::read(d.join("map-a.csv")).expect("a"),
        fs::read(d.join("map-b.csv")).expect("b"),
        "the exported mappings differ"
    );
    let ra: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("a.json")).expect("a")).expect("json");
    let rb: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("b.json")).expect("b")).expect("json");
    assert_eq!(ra["levels"], rb["levels"]);
    assert_eq!(ra["recipe_written"]["id"], id.as_str());
    assert_eq!(rb["recipe"]["id"], id.as_str());
    assert_eq!(rb["search"]["evaluated"], 1);
    assert!(rb["min_class"].as_u64().is_some_and(|m| m >= K as u64));

    // A small delivery does not meet k at the recipe's levels: refused, nothing written.
    let text = fs::read_to_string(d.join("b/flat/persons.csv")).expect("b");
    let small: Vec<&str> = text.lines().take(301).collect();
    fs::write(d.join("few.csv"), small.join("\n") + "\n").expect("small");
    let events = fs::read_to_string(d.join("b/events/events.csv")).expect("b");
    let few_events: Vec<&str> = events
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',')
                    .next()
                    .and_then(|id| id.parse::<u32>().ok())
                    .is_some_and(|id| id < 300)
        })
        .map(|(_, l)| l)
        .collect();
    fs::write(d.join("few-events.csv"), few_events.join("\n") + "\n").expect("few");
    let args = apply("few.csv", "few-events.csv", "small", &[]);
    let err = enclave_fails(d, &args);
    assert!(
        err.contains("does not meet the model at the recipe's levels") && err.contains("k = 5"),
        "{err}"
    );
    for f in [
        "small-persons.csv",
        "small-events.csv",
        "small.json",
        "small.html",
    ] {
        assert!(!d.join(f).exists(), "{f} written by a refused run");
    }
    assert!(fs::read_dir(d).expect("dir").all(|e| {
        !e.expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("staging")
    }));

    // A changed recipe is not the approved one.
    let changed = fs::read_to_string(d.join("recipe.json"))
        .expect("recipe")
        .replace("\"k\": 5", "\"k\": 2");
    fs::write(d.join("recipe.json"), changed).expect("write");
    let args = apply("b/flat/persons.csv", "b/events/events.csv", "c", &[]);
    let err = enclave_fails(d, &args);
    assert!(err.contains("not the approved version"), "{err}");
}

/// The two profiles (issue #12): each output carries only what its rules allow, and what a
/// profile forbids is refused before anything is written.
#[test]
fn the_two_profiles_release_what_their_rules_allow_and_refuse_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    enclave(
        d,
        &[
            "synth",
            "--persons",
            "5000",
            "--seed",
            "31",
            "--formats",
            "flat,events",
            "--out",
            "syn",
        ],
    );
    hierarchies(d, "syn/flat/persons.csv", "syn/events/events.csv");
    fs::write(d.join("secret.hex"), SECRET).expect("secret");
    let drop = DROP;
    let args = |out: &str, drop: &str, extra: &[&str]| -> Vec<String> {
        let (persons, events, report) = (
            format!("{out}-persons.csv"),
            format!("{out}-events.csv"),
            format!("{out}.json"),
        );
        let mut all = vec![
            "--keep-events",
            "value",
            "--shift-dates",
            "date",
            "--max-shift-days",
            "30",
            "--drop-events",
            "institution",
            "--output-persons",
            &persons,
            "--output-events",
            &events,
            "--report",
            &report,
        ];
        all.extend(extra);
        persons_args("syn/flat/persons.csv", "syn/events/events.csv", drop, &all)
    };
    let run = |a: Vec<String>| enclave(d, &a);
    let fails = |a: Vec<String>| enclave_fails(d, &a);

    // Pseudonymized: values kept, identifiers gone, keys specific to the release.
    run(args(
        "p1",
        drop,
        &["--profile", "pseudonymized", "--key-file", "secret.hex"],
    ));
    run(args("p2", drop, &["--profile", "pseudonymized"]));
    let mut input: HashMap<String, csv::StringRecord> = HashMap::new();
    let mut r = reader(&d.join("syn/flat/persons.csv"), b',');
    let in_header: Vec<String> = r.headers().expect("h").iter().map(str::to_owned).collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        input.insert(release_key(&rec[0]), rec);
    }
    let mut r = reader(&d.join("p1-persons.csv"), b',');
    let header: Vec<String> = r.headers().expect("h").iter().map(str::to_owned).collect();
    for forbidden in drop.split(',') {
        assert!(
            !header.iter().any(|h| h == forbidden),
            "{forbidden} released"
        );
    }
    let mut p1_keys = HashSet::new();
    for rec in r.records() {
        let rec = rec.expect("row");
        let original = input.get(&rec[0]).expect("a key of an input person");
        for (c, name) in header.iter().enumerate().skip(1) {
            if let Some(i) = in_header.iter().position(|h| h == name) {
                assert_eq!(
                    &rec[c], &original[i],
                    "{name} changed in a pseudonymized release"
                );
            }
        }
        p1_keys.insert(rec[0].to_owned());
    }
    assert_eq!(
        p1_keys.len(),
        input.len(),
        "a pseudonymized release suppresses nobody"
    );
    let mut dx_in = 0usize;
    let mut input_codes = HashSet::new();
    for rec in reader(&d.join("syn/events/events.csv"), b',').records() {
        let rec = rec.expect("row");
        if &rec[3] == "dx" {
            dx_in += 1;
            input_codes.insert(rec[4].to_owned());
        }
    }
    let mut r = reader(&d.join("p1-events.csv"), b',');
    let code = column(&mut r, "code");
    let codes: Vec<String> = r
        .records()
        .map(|x| x.expect("row")[code].to_owned())
        .collect();
    assert_eq!(codes.len(), dx_in);
    assert!(
        codes.iter().all(|c| input_codes.contains(c)),
        "a code was generalized"
    );
    let p2_keys: HashSet<String> = reader(&d.join("p2-persons.csv"), b',')
        .records()
        .map(|x| x.expect("row")[0].to_owned())
        .collect();
    assert!(
        p1_keys.is_disjoint(&p2_keys),
        "two releases share person keys"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("p1.json")).expect("report")).expect("json");
    assert_eq!(report["profile"]["legal_name"], "仮名加工医療情報");

    // Refused before anything is written: a privacy model under the pseudonymized profile;
    // k = 1 under the anonymized one; a column nobody decided about (the phone number).
    let err = fails(args(
        "x1",
        drop,
        &[
            "--profile",
            "pseudonymized",
            "--k",
            "5",
            "--suppression-limit",
            "0.05",
        ],
    ));
    assert!(err.contains("do not apply"), "{err}");
    let err = fails(args("x2", drop, &["--k", "1", "--suppression-limit", "0"]));
    assert!(err.contains("k >= 2"), "{err}");
    let without_phone = drop.replace("phone,", "");
    let err = fails(args(
        "x3",
        &without_phone,
        &["--k", "5", "--suppression-limit", "0.05"],
    ));
    assert!(err.contains("column phone"), "{err}");
    for f in [
        "x1-persons.csv",
        "x2-persons.csv",
        "x3-persons.csv",
        "x3-events.csv",
    ] {
        assert!(!d.join(f).exists(), "{f} written by a refused run");
    }

    // Anonymized: only declared columns, every person's class at least k, extreme HbA1c
    // values top and bottom coded.
    run(args(
        "a",
        drop,
        &[
            "--k",
            "5",
            "--suppression-limit",
            "0.05",
            "--top-bottom",
            "hba1c=5.2:8",
        ],
    ));
    let mut r = reader(&d.join("a-persons.csv"), b',');
    let header: Vec<String> = r.headers().expect("h").iter().map(str::to_owned).collect();
    let allowed: Vec<&str> = ["person_id", "age", "sex", "postal_code", "dx_codes"]
        .into_iter()
        .chain(KEEP.split(','))
        .collect();
    assert!(
        header.iter().all(|h| allowed.contains(&h.as_str())),
        "{header:?}"
    );
    let mut sizes: HashMap<String, usize> = HashMap::new();
    for rec in r.records() {
        let rec = rec.expect("row");
        *sizes
            .entry(format!(
                "{}\t{}\t{}\t{}",
                &rec[1],
                &rec[2],
                &rec[3],
                &rec[rec.len() - 1]
            ))
            .or_default() += 1;
    }
    assert!(sizes.values().all(|&n| n >= K), "a class below k");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("a.json")).expect("report")).expect("json");
    assert_eq!(report["profile"]["legal_name"], "匿名加工医療情報");
    let mut r = reader(&d.join("a-persons.csv"), b',');
    let h = column(&mut r, "hba1c");
    let (mut low, mut high) = (0u64, 0u64);
    for rec in r.records() {
        let v = rec.expect("row")[h].to_owned();
        match v.as_str() {
            "" => {}
            "<5.2" => low += 1,
            ">8" => high += 1,
            x => {
                let x: f64 = x.parse().expect("a number");
                assert!((5.2..=8.0).contains(&x), "hba1c {x} released");
            }
        }
    }
    assert!(
        low > 0 && high > 0,
        "{low} low, {high} high: the data has extremes"
    );
    let coded = &report["persons"]["top_bottom_coding"][0];
    assert_eq!(coded["coded_low"], low);
    assert_eq!(coded["coded_high"], high);
    let err = fails(args(
        "x4",
        drop,
        &["--profile", "pseudonymized", "--top-bottom", "hba1c=5.2:8"],
    ));
    assert!(err.contains("do not apply"), "{err}");
}

/// The released label of `value` in an interval hierarchy of whole numbers: `lo-hi`, the
/// value itself at level 0, `*` at the top.
fn interval_holds(label: &str, value: u64) -> bool {
    if label == "*" {
        return true;
    }
    match label.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi): (u64, u64) = (lo.parse().expect("lo"), hi.parse().expect("hi"));
            (lo..=hi).contains(&value)
        }
        None => label.parse::<u64>().expect("count") == value,
    }
}

/// A released first date (`YYYY-MM-DD`, `YYYY-MM`, `YYYY`, `1990s`, `*`) covers `date`.
fn date_holds(label: &str, date: &str) -> bool {
    label == "*"
        || label
            .strip_suffix("0s")
            .map_or(date.starts_with(label), |decade| date.starts_with(decade))
}

/// Event-derived quasi-identifiers (issue #12): the number of a person's diagnosis rows and
/// the date of the first are generalized with the rest of the person, and the diagnosis rows
/// themselves are not released, so nothing shows the exact count or date. Checked from the
/// released files against the input.
#[test]
fn the_number_of_visits_and_the_first_date_are_quasi_identifiers_and_rows_are_summarized() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    enclave(
        d,
        &[
            "synth",
            "--persons",
            "20000",
            "--seed",
            "41",
            "--formats",
            "flat,events",
            "--out",
            "syn",
        ],
    );
    hierarchies(d, "syn/flat/persons.csv", "syn/events/events.csv");
    fs::write(d.join("secret.hex"), SECRET).expect("secret");
    let extra = [
        "--keep-events",
        "value",
        "--drop-events",
        "institution,date",
        "--event-count",
        "dx=5,10,20",
        "--first-date",
        "dx=date",
        "--key-file",
        "secret.hex",
        "--k",
        "5",
        "--suppression-limit",
        "0.1",
        "--output-persons",
        "p.csv",
        "--output-events",
        "e.csv",
        "--report",
        "r.json",
        "--recipe-out",
        "rc.json",
    ];
    let out = enclave(
        d,
        &persons_args(
            "syn/flat/persons.csv",
            "syn/events/events.csv",
            DROP,
            &extra,
        ),
    );
    eprintln!("{out}");

    // The truth, from the input: each person's diagnosis rows and first diagnosis date.
    let mut truth: HashMap<String, (u64, String)> = HashMap::new();
    let mut dx_rows = 0u64;
    let mut r = reader(&d.join("syn/events/events.csv"), b',');
    let c: Vec<usize> = ["person_id", "date", "kind"]
        .iter()
        .map(|n| column(&mut r, n))
        .collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        if &rec[c[2]] != "dx" {
            continue;
        }
        dx_rows += 1;
        let e = truth
            .entry(release_key(&rec[c[0]]))
            .or_insert((0, "9999-99-99".into()));
        e.0 += 1;
        if rec[c[1]] < *e.1 {
            e.1 = rec[c[1]].to_owned();
        }
    }

    // No diagnosis row is released; the count and first date are, generalized and true.
    let mut r = reader(&d.join("e.csv"), b',');
    let kind = column(&mut r, "kind");
    assert!(
        r.records().all(|rec| &rec.expect("row")[kind] != "dx"),
        "a diagnosis row of a summarized kind was released"
    );
    let mut r = reader(&d.join("p.csv"), b',');
    let cols: Vec<usize> = [
        "person_id",
        "age",
        "sex",
        "postal_code",
        "dx_codes",
        "dx_count",
        "dx_first",
    ]
    .iter()
    .map(|n| column(&mut r, n))
    .collect();
    let mut signatures: HashMap<String, String> = HashMap::new();
    let mut generalized_counts = 0;
    for rec in r.records() {
        let rec = rec.expect("row");
        let key = rec[cols[0]].to_owned();
        let (count, first) = truth.get(&key).cloned().unwrap_or((0, String::new()));
        let (count_label, first_label) = (&rec[cols[5]], &rec[cols[6]]);
        assert!(
            interval_holds(count_label, count),
            "person {key}: {count} dx rows released as {count_label}"
        );
        if count == 0 {
            assert_eq!(
                first_label, "-",
                "person {key}: no dx, first date {first_label}"
            );
        } else {
            assert!(
                date_holds(first_label, &first),
                "person {key}: first dx {first} released as {first_label}"
            );
        }
        generalized_counts += usize::from(count_label.contains('-') || count_label == "*");
        let sig: Vec<&str> = cols[1..].iter().map(|&i| &rec[i]).collect();
        signatures.insert(key, sig.join("\t"));
    }
    assert!(generalized_counts > 0, "no count was generalized");
    let (below, classes) = persons_below_k(&signatures);
    assert_eq!(
        below, 0,
        "persons with fewer than {K} alike over {classes} classes"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("r.json")).expect("report")).expect("json");
    assert_eq!(report["persons"]["events_summarized"], dx_rows);
    assert!(
        report["levels"]["dx_count"].is_u64(),
        "{}",
        report["levels"]
    );
    assert!(
        report["levels"]["dx_first"].is_u64(),
        "{}",
        report["levels"]
    );
    let en = enclave(d, &["explain", "--lang", "en", "r.json"]);
    assert!(
        en.contains("Summarized event rows") && en.contains("dx_count, dx_first"),
        "{en}"
    );
    // The recipe replays it: the derived hierarchies are rebuilt the same way.
    enclave(
        d,
        &[
            "apply-recipe",
            "--recipe",
            "rc.json",
            "--persons",
            "syn/flat/persons.csv",
            "--events",
            "syn/events/events.csv",
            "--key-file",
            "secret.hex",
            "--output-persons",
            "p2.csv",
            "--output-events",
            "e2.csv",
            "--report",
            "r2.json",
        ],
    );
    assert_eq!(
        fs::read(d.join("p2.csv")).expect("p2"),
        fs::read(d.join("p.csv")).expect("p")
    );
}

/// Lab values released as event rows are top/bottom coded per test (HbA1c here): checked
/// row by row against the input, through the release keys.
#[test]
fn extreme_lab_values_in_event_rows_are_coded_per_test() {
    const HBA1C: &str = "3D046000001906202";
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    enclave(
        d,
        &[
            "synth",
            "--persons",
            "5000",
            "--seed",
            "43",
            "--formats",
            "flat,events",
            "--out",
            "syn",
        ],
    );
    hierarchies(d, "syn/flat/persons.csv", "syn/events/events.csv");
    enclave(
        d,
        &[
            "hierarchy",
            "--input",
            "syn/events/events.csv",
            "--delimiter",
            ",",
            "--column",
            "code",
            "--where",
            "kind=lab",
            "--mask=12,17",
            "--out",
            "lab.csv",
        ],
    );
    fs::write(d.join("secret.hex"), SECRET).expect("secret");
    let coding = format!("value@{HBA1C}=5.5:9");
    let extra = [
        "--event-set",
        "lab=lab.csv",
        "--keep-events",
        "value",
        "--drop-events",
        "institution",
        "--shift-dates",
        "date",
        "--max-shift-days",
        "10",
        "--top-bottom-events",
        &coding,
        "--key-file",
        "secret.hex",
        "--k",
        "5",
        "--suppression-limit",
        "0.1",
        "--output-persons",
        "p.csv",
        "--output-events",
        "e.csv",
        "--report",
        "r.json",
    ];
    enclave(
        d,
        &persons_args(
            "syn/flat/persons.csv",
            "syn/events/events.csv",
            DROP,
            &extra,
        ),
    );
    // Input lab rows per release key, in order.
    let mut input: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut r = reader(&d.join("syn/events/events.csv"), b',');
    let c: Vec<usize> = ["person_id", "kind", "code", "value"]
        .iter()
        .map(|n| column(&mut r, n))
        .collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        if &rec[c[1]] == "lab" {
            input
                .entry(release_key(&rec[c[0]]))
                .or_default()
                .push((rec[c[2]].to_owned(), rec[c[3]].to_owned()));
        }
    }
    let mut output: HashMap<String, Vec<String>> = HashMap::new();
    let mut r = reader(&d.join("e.csv"), b',');
    let c: Vec<usize> = ["person_id", "kind", "value"]
        .iter()
        .map(|n| column(&mut r, n))
        .collect();
    for rec in r.records() {
        let rec = rec.expect("row");
        if &rec[c[1]] == "lab" {
            output
                .entry(rec[c[0]].to_owned())
                .or_default()
                .push(rec[c[2]].to_owned());
        }
    }
    assert!(!output.is_empty(), "no lab row released");
    let (mut low, mut high, mut hba1c) = (0u64, 0u64, 0u64);
    for (key, values) in &output {
        let rows = &input[key];
        assert_eq!(rows.len(), values.len(), "lab rows lost or added");
        for ((code, v), out) in rows.iter().zip(values) {
            if code != HBA1C || v.is_empty() {
                assert_eq!(v, out, "a value of another test changed");
                continue;
            }
            hba1c += 1;
            let x: f64 = v.parse().expect("number");
            let want = if x < 5.5 {
                low += 1;
                "<5.5".to_owned()
            } else if x > 9.0 {
                high += 1;
                ">9".to_owned()
            } else {
                v.clone()
            };
            assert_eq!(*out, want, "HbA1c {v}");
        }
    }
    eprintln!("{hba1c} HbA1c values released: {low} coded low, {high} coded high");
    assert!(
        low > 0 && high > 0,
        "{hba1c} HbA1c values, none extreme on both sides"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("r.json")).expect("report")).expect("json");
    let coded = &report["persons"]["top_bottom_coding_events"][0];
    assert_eq!(coded["code"], HBA1C);
    assert_eq!(coded["coded_low"], low);
    assert_eq!(coded["coded_high"], high);
}
