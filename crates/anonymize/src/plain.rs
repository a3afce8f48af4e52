//! The report in plain language, Japanese and English (issue #12): what was done to each
//! attribute, how likely a released person is to be re-identified under the three usual
//! attacker models, and what each attribute lost — for the approving operator and the
//! data-use committee, who should not need to read JSON. Rendered from the JSON report
//! alone, so it can be produced again from an archived report and never says anything the
//! figures do not.

use serde_json::Value;

/// Language of the plain report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// 日本語.
    Ja,
    /// English.
    En,
}

impl Lang {
    /// Parses `ja` or `en`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ja" => Some(Lang::Ja),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    fn pick<'a>(self, en: &'a str, ja: &'a str) -> &'a str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(x: f64) -> String {
    if x == 0.0 {
        "0%".into()
    } else if x < 0.001 {
        format!("{:.3}%", x * 100.0)
    } else {
        format!("{:.1}%", x * 100.0)
    }
}

/// A probability as "1 in N (P%)" / "N人に1人 (P%)".
fn one_in(lang: Lang, p: f64) -> String {
    if p <= 0.0 {
        return lang.pick("none", "なし").into();
    }
    let n = 1.0 / p;
    let n = if (n - n.round()).abs() < 0.05 {
        format!("{}", n.round())
    } else {
        format!("{n:.1}")
    };
    match lang {
        Lang::En => format!("1 in {n} ({})", percent(p)),
        Lang::Ja => format!("{n}人に1人（{}）", percent(p)),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The plain report of a JSON report (as written by `enclave anonymize`,
/// `anonymize-persons` or `apply-recipe`), as Markdown text.
pub fn render(report: &Value, lang: Lang) -> String {
    let l = lang;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let persons = report.get("persons").filter(|p| p.is_object());
    let unit_many = match (persons.is_some(), l) {
        (true, Lang::En) => "persons",
        (false, Lang::En) => "records",
        (true, Lang::Ja) => "人",
        (false, Lang::Ja) => "件",
    };
    let config = &report["config"];
    let k = u(&report["k"]);
    line(l.pick("# Anonymization report", "# 匿名加工の報告").into());
    line(String::new());

    // In short.
    line(l.pick("## In short", "## 概要").into());
    let rows = u(&report["rows"]);
    let suppressed = u(&report["suppressed"]);
    let profile = report["profile"]["name"].as_str().unwrap_or("anonymized");
    if let Some(legal) = report["profile"]["legal_name"].as_str() {
        line(match l {
            Lang::En => format!("- Profile: **{profile}** ({legal})."),
            Lang::Ja => format!("- 提供の区分: **{legal}**（{profile}）。"),
        });
    }
    line(match l {
        Lang::En => format!(
            "- Of {} {unit_many}, {} are released and {} ({}) are withheld entirely.",
            grouped(rows),
            grouped(rows - suppressed.min(rows)),
            grouped(suppressed),
            percent(f(&report["suppressed_fraction"]))
        ),
        Lang::Ja => format!(
            "- {}{unit_many}のうち {}{unit_many}を提供し、{}{unit_many}（{}）は提供から全て除外しました。",
            grouped(rows),
            grouped(rows - suppressed.min(rows)),
            grouped(suppressed),
            percent(f(&report["suppressed_fraction"]))
        ),
    });
    if let Some(p) = persons {
        line(match l {
            Lang::En => format!(
                "- Their events: {} read, {} released; the {} events of withheld persons are not \
                 released.",
                grouped(u(&p["events"])),
                grouped(u(&p["events_written"])),
                grouped(u(&p["events_of_suppressed_persons"]))
            ),
            Lang::Ja => format!(
                "- イベント（診療記録）: {}件を読み、{}件を提供。除外した人の {}件は提供しません。",
                grouped(u(&p["events"])),
                grouped(u(&p["events_written"])),
                grouped(u(&p["events_of_suppressed_persons"]))
            ),
        });
    }
    let qis: Vec<String> = report["levels"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if profile != "pseudonymized" && k > 1 {
        line(match l {
            Lang::En => format!(
                "- Every released {} shares the combination of {} with at least {k} {unit_many} \
                 (k-anonymity, k = {k}); the smallest group has {}.",
                if persons.is_some() { "person" } else { "record" },
                qis.join(", "),
                grouped(u(&report["min_class"]))
            ),
            Lang::Ja => format!(
                "- 提供する全ての{}は、{} の組合せが少なくとも {k}{unit_many}と同じです（k-匿名性, k = {k}）。最小のグループは {}{unit_many}です。",
                if persons.is_some() { "人" } else { "記録" },
                qis.join("・"),
                grouped(u(&report["min_class"]))
            ),
        });
    }
    if let Some(lv) = config["l"].as_f64() {
        line(match l {
            Lang::En => format!(
                "- Within every group, each sensitive attribute ({}) has at least {lv} \
                 different values (l-diversity, {}).",
                names(&config["sensitive"]).join(", "),
                config["l_variant"].as_str().unwrap_or("distinct")
            ),
            Lang::Ja => format!(
                "- 各グループの中で、機微属性（{}）は少なくとも {lv} 種類の値をとります（l-多様性, {}）。",
                names(&config["sensitive"]).join("・"),
                config["l_variant"].as_str().unwrap_or("distinct")
            ),
        });
    }
    if let Some(t) = config["t"].as_f64() {
        line(match l {
            Lang::En => format!(
                "- Within every group, the distribution of each sensitive attribute is within \
                 {t} of the whole release's (t-closeness); the largest distance is {:.4}.",
                f(&report["max_t_distance"])
            ),
            Lang::Ja => format!(
                "- 各グループの機微属性の分布は、全体の分布との距離が {t} 以内です（t-近接性）。最大の距離は {:.4} です。",
                f(&report["max_t_distance"])
            ),
        });
    }
    line(String::new());

    // Each attribute.
    line(
        l.pick("## What was done to each attribute", "## 属性ごとの加工")
            .into(),
    );
    let metric = report["metric"].as_str().unwrap_or("");
    if let Some(attrs) = report["attributes"].as_object() {
        for (column, a) in attrs {
            let level = u(&a["level"]);
            let top = u(&a["top_level"]);
            let example = a["example"].as_array().filter(|e| e.len() == 2).map(|e| {
                (
                    e[0].as_str().unwrap_or("").to_owned(),
                    e[1].as_str().unwrap_or("").to_owned(),
                )
            });
            let what = if level == 0 {
                l.pick("kept as it is", "加工せずに提供").to_owned()
            } else if level >= top {
                l.pick(
                    "fully generalized (no information left)",
                    "完全に一般化（情報は残りません）",
                )
                .to_owned()
            } else {
                match l {
                    Lang::En => format!("generalized to level {level} of {top}"),
                    Lang::Ja => format!("階層 {top} 段のうち {level} 段目まで一般化"),
                }
            };
            let example = match (example, level) {
                (Some((from, to)), 1..) => match l {
                    Lang::En => format!(", for example \"{from}\" → \"{to}\""),
                    Lang::Ja => format!("（例:「{from}」→「{to}」）"),
                },
                _ => String::new(),
            };
            let loss = if metric == "loss" {
                match l {
                    Lang::En => format!(
                        "; information lost {} (0% = none, 100% = all)",
                        percent(f(&a["loss"]))
                    ),
                    Lang::Ja => format!(
                        "。情報損失 {}（0% = 損失なし、100% = 全て失う）",
                        percent(f(&a["loss"]))
                    ),
                }
            } else {
                String::new()
            };
            line(format!("- **{column}**: {what}{example}{loss}"));
        }
    }
    for s in names(&config["sensitive"]) {
        line(match l {
            Lang::En => format!("- **{s}**: sensitive attribute, released as it is"),
            Lang::Ja => format!("- **{s}**: 機微属性。加工せずに提供"),
        });
    }
    let dropped = names(&config["drop"]);
    if !dropped.is_empty() {
        line(match l {
            Lang::En => format!("- Removed: {}", dropped.join(", ")),
            Lang::Ja => format!("- 削除: {}", dropped.join("・")),
        });
    }
    if let Some(p) = persons {
        for set in p["event_sets"].as_array().into_iter().flatten() {
            let kind = set["kind"].as_str().unwrap_or("");
            if let Some(n) = set["min_persons_per_code"].as_u64() {
                line(match l {
                    Lang::En => format!(
                        "- **{kind}** codes: {} distinct codes released; each is held by at least \
                         {} persons (rare codes are generalized with their person's whole set)",
                        grouped(u(&set["released_codes"])),
                        grouped(n)
                    ),
                    Lang::Ja => format!(
                        "- **{kind}** のコード: {} 種類を提供。どのコードも少なくとも {}人が持ちます（まれなコードは、その人のコード集合ごと一般化）",
                        grouped(u(&set["released_codes"])),
                        grouped(n)
                    ),
                });
            }
        }
        let derived: Vec<String> = p["derived_columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["column"].as_str().map(str::to_owned))
            .collect();
        if !derived.is_empty() {
            line(match l {
                Lang::En => format!(
                    "- Summarized event rows: {} rows are not released; what they say is in the \
                     person table as {}, generalized with the person",
                    grouped(u(&p["events_summarized"])),
                    derived.join(", ")
                ),
                Lang::Ja => format!(
                    "- 要約したイベント: {}件の行は提供せず、その内容は個人の表の {} として（個人と一緒に一般化して）提供",
                    grouped(u(&p["events_summarized"])),
                    derived.join("・")
                ),
            });
        }
        let kept: Vec<String> = names(&p["kept_columns"])
            .into_iter()
            .chain(names(&p["kept_event_columns"]))
            .collect();
        if !kept.is_empty() {
            line(match l {
                Lang::En => format!(
                    "- Kept as they are (decided by the operator): {}",
                    kept.join(", ")
                ),
                Lang::Ja => format!("- 加工せずに提供（作成者の判断）: {}", kept.join("・")),
            });
        }
        let dropped_events = names(&p["dropped_event_columns"]);
        if !dropped_events.is_empty() {
            line(match l {
                Lang::En => format!("- Removed from the events: {}", dropped_events.join(", ")),
                Lang::Ja => format!("- イベントから削除: {}", dropped_events.join("・")),
            });
        }
        for c in p["top_bottom_coding"].as_array().into_iter().flatten() {
            let column = c["column"].as_str().unwrap_or("");
            line(match l {
                Lang::En => format!(
                    "- **{column}**: values below {} or above {} are replaced by those limits \
                     (top/bottom coding): {} low and {} high values",
                    c["low"], c["high"], c["coded_low"], c["coded_high"]
                ),
                Lang::Ja => format!(
                    "- **{column}**: {} 未満・{} 超の値はその境界値に置換（トップ・ボトムコーディング）: 下側 {}件、上側 {}件",
                    c["low"], c["high"], c["coded_low"], c["coded_high"]
                ),
            });
        }
        for c in p["top_bottom_coding_events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let column = c["column"].as_str().unwrap_or("");
            let code = c["code"].as_str().unwrap_or("");
            line(match l {
                Lang::En => format!(
                    "- **{column}** of the {code} rows: values below {} or above {} are replaced \
                     by those limits: {} low and {} high values",
                    c["low"], c["high"], c["coded_low"], c["coded_high"]
                ),
                Lang::Ja => format!(
                    "- {code} の行の **{column}**: {} 未満・{} 超の値はその境界値に置換: 下側 {}件、上側 {}件",
                    c["low"], c["high"], c["coded_low"], c["coded_high"]
                ),
            });
        }
        let dates = names(&p["dates_shifted"]);
        if !dates.is_empty() {
            line(match l {
                Lang::En => format!(
                    "- Dates ({}): each person's dates are moved by one random offset of at most \
                     {} days, so the intervals between a person's events are kept",
                    dates.join(", "),
                    p["max_shift_days"]
                ),
                Lang::Ja => format!(
                    "- 日付（{}）: 人ごとに最大 {} 日の同じ乱数だけずらします。同じ人のイベント間の間隔は保たれます",
                    dates.join("・"),
                    p["max_shift_days"]
                ),
            });
        }
        line(
            l.pick(
                "- Person ids: replaced by keys made for this release only (HMAC-SHA256 under a \
                 secret of this release); they cannot be linked to ids outside it",
                "- 個人ID: この提供だけの鍵（提供ごとの秘密鍵による HMAC-SHA256）に置換。提供の外のIDとは結び付けられません",
            )
            .into(),
        );
    }
    line(String::new());

    // Risk.
    let risk = &report["risk"];
    let threshold = f(&risk["threshold"]);
    let noun = match (persons.is_some(), l) {
        (true, Lang::En) => "person",
        (false, Lang::En) => "record",
        (true, Lang::Ja) => "人",
        (false, Lang::Ja) => "記録",
    };
    line(match l {
        Lang::En => format!("## Risk of re-identification per {noun}"),
        Lang::Ja => format!(
            "## {}の再識別リスク",
            if persons.is_some() {
                "一人ひとり"
            } else {
                "記録ごと"
            }
        ),
    });
    line(match l {
        Lang::En => format!(
            "- **Prosecutor** (the attacker knows the person is in the release): at most {} for \
             any released person; {} on average.",
            one_in(l, f(&risk["prosecutor_max"])),
            one_in(l, f(&risk["prosecutor_avg"]))
        ),
        Lang::Ja => format!(
            "- **検察官モデル**（攻撃者はその人が提供データに含まれることを知っている）: 最大 {}、平均 {}。",
            one_in(l, f(&risk["prosecutor_max"])),
            one_in(l, f(&risk["prosecutor_avg"]))
        ),
    });
    line(match l {
        Lang::En => format!(
            "- **Journalist** (the attacker does not know whether the person is in the release \
             and matches against a population): at most {}. The population is taken to be the \
             input data, of which the release is everything not withheld; a larger population \
             only lowers this figure.",
            one_in(l, f(&risk["prosecutor_max"]))
        ),
        Lang::Ja => format!(
            "- **ジャーナリストモデル**（攻撃者はその人が含まれるか知らず、母集団と照合する）: 最大 {}。母集団は入力データ（提供はその除外分を除いた全て）とみなしています。より大きな母集団ではこの値は下がるだけです。",
            one_in(l, f(&risk["prosecutor_max"]))
        ),
    });
    line(match l {
        Lang::En => format!(
            "- **Marketer** (the attacker tries to re-identify as many as possible): {} of the \
             released {unit_many} are expected to be re-identified.",
            percent(f(&risk["marketer"]))
        ),
        Lang::Ja => format!(
            "- **マーケターモデル**（攻撃者はできるだけ多くを再識別しようとする）: 提供する{noun}の {} が再識別されると見込まれます。",
            percent(f(&risk["marketer"]))
        ),
    });
    line(match l {
        Lang::En => format!(
            "- {} {unit_many} have a prosecutor risk above the threshold {}.",
            grouped(u(&risk["records_at_risk"])),
            one_in(l, threshold)
        ),
        Lang::Ja => format!(
            "- 検察官モデルのリスクが閾値 {} を超える{noun}: {}{unit_many}。",
            one_in(l, threshold),
            grouped(u(&risk["records_at_risk"]))
        ),
    });
    if let Some(buckets) = report["class_sizes"].as_array() {
        line(String::new());
        line(match l {
            Lang::En => format!("| group size | groups | {unit_many} | risk per {noun} |"),
            Lang::Ja => {
                format!("| グループの大きさ | グループ数 | {unit_many}数 | {noun}あたりのリスク |")
            }
        });
        line("|---|---|---|---|".into());
        for b in buckets {
            let from = u(&b["from"]);
            let largest = u(&b["largest"]);
            let size = if largest > from {
                format!("{from}–{largest}")
            } else {
                format!("{from}")
            };
            let risk = if largest > from {
                format!(
                    "{} – {}",
                    percent(1.0 / largest as f64),
                    percent(1.0 / from.max(1) as f64)
                )
            } else {
                percent(1.0 / from.max(1) as f64)
            };
            line(format!(
                "| {size} | {} | {} | {risk} |",
                grouped(u(&b["classes"])),
                grouped(u(&b["records"]))
            ));
        }
    }
    line(String::new());

    // Recipe.
    if let Some(id) = report["recipe"]["id"].as_str() {
        line(match l {
            Lang::En => format!("Applied recipe (approved method version): `{id}`."),
            Lang::Ja => format!("適用したレシピ（承認された加工方法の版）: `{id}`。"),
        });
    }
    if let Some(id) = report["recipe_written"]["id"].as_str() {
        line(match l {
            Lang::En => format!("Recipe of this run: `{id}`."),
            Lang::Ja => format!("この加工のレシピ: `{id}`。"),
        });
    }
    line(match l {
        Lang::En => format!(
            "Method: {}. Configuration SHA-256: `{}`.",
            report["method_version"].as_str().unwrap_or(""),
            report["config_sha256"].as_str().unwrap_or("")
        ),
        Lang::Ja => format!(
            "方法: {}。設定の SHA-256: `{}`。",
            report["method_version"].as_str().unwrap_or(""),
            report["config_sha256"].as_str().unwrap_or("")
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "k": 5, "rows": 1000, "suppressed": 20, "suppressed_fraction": 0.02,
            "min_class": 5, "metric": "loss",
            "levels": {"age": 2, "sex": 0},
            "attributes": {
                "age": {"level": 2, "top_level": 4, "example": ["37", "35-39"], "loss": 0.25},
                "sex": {"level": 0, "top_level": 1, "example": ["F", "F"], "loss": 0.0}
            },
            "config": {"sensitive": ["dx"], "drop": ["name"], "l": 2, "l_variant": "distinct"},
            "risk": {"prosecutor_max": 0.2, "prosecutor_avg": 0.05, "records_at_risk": 0,
                     "threshold": 0.2, "marketer": 0.05},
            "class_sizes": [{"from": 5, "largest": 9, "classes": 10, "records": 70},
                            {"from": 10, "largest": 19, "classes": 60, "records": 910}],
            "method_version": "m", "config_sha256": "abc"
        })
    }

    #[test]
    fn both_languages_say_the_figures_of_the_report() {
        for lang in [Lang::En, Lang::Ja] {
            let text = render(&report(), lang);
            for needle in [
                "980", "20", "35-39", "25.0%", "20.0%", "5.0%", "name", "dx", "abc",
            ] {
                assert!(text.contains(needle), "{lang:?} lacks {needle}:\n{text}");
            }
            assert!(text.contains("5–9"), "{text}");
        }
        let ja = render(&report(), Lang::Ja);
        assert!(
            ja.contains("検察官モデル") && ja.contains("マーケターモデル"),
            "{ja}"
        );
        let en = render(&report(), Lang::En);
        assert!(en.contains("1 in 5 (20.0%)"), "{en}");
        assert!(en.contains("at least 5 records"), "{en}");
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(51_129_037), "51,129,037");
        assert_eq!(one_in(Lang::En, 0.25), "1 in 4 (25.0%)");
        assert_eq!(one_in(Lang::Ja, 0.0), "なし");
        assert_eq!(percent(0.00001), "0.001%");
    }

    #[test]
    fn an_empty_or_foreign_report_renders_without_panicking() {
        for v in [json!({}), json!(null), json!({"persons": 3, "risk": "x"})] {
            assert!(render(&v, Lang::Ja).starts_with("# "));
        }
    }
}
