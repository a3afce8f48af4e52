//! Hand-typed code tables and population figures (sources in `data/LICENSES.md`): the
//! prefectures with their 2020 census populations, the 2020 age pyramid, the diseases the
//! generator knows with their age-dependent prevalence, the drugs that treat them, and the
//! lab and checkup items with their JLAC10 / 特定健診 codes.
//!
//! Prevalences are plausible round figures for a synthetic population, not epidemiology:
//! what matters for the anonymizer and the linker is that the correlations (age, sex,
//! disease → drug → lab value) are there.

/// Prefecture: name, reading, 2020 census population in thousands. Index + 1 is the JIS
/// X 0401 code.
pub const PREFECTURES: [(&str, &str, u32); 47] = [
    ("北海道", "ホッカイドウ", 5225),
    ("青森県", "アオモリケン", 1238),
    ("岩手県", "イワテケン", 1211),
    ("宮城県", "ミヤギケン", 2302),
    ("秋田県", "アキタケン", 960),
    ("山形県", "ヤマガタケン", 1068),
    ("福島県", "フクシマケン", 1833),
    ("茨城県", "イバラキケン", 2867),
    ("栃木県", "トチギケン", 1933),
    ("群馬県", "グンマケン", 1939),
    ("埼玉県", "サイタマケン", 7345),
    ("千葉県", "チバケン", 6284),
    ("東京都", "トウキョウト", 14048),
    ("神奈川県", "カナガワケン", 9237),
    ("新潟県", "ニイガタケン", 2201),
    ("富山県", "トヤマケン", 1035),
    ("石川県", "イシカワケン", 1133),
    ("福井県", "フクイケン", 767),
    ("山梨県", "ヤマナシケン", 810),
    ("長野県", "ナガノケン", 2048),
    ("岐阜県", "ギフケン", 1979),
    ("静岡県", "シズオカケン", 3633),
    ("愛知県", "アイチケン", 7542),
    ("三重県", "ミエケン", 1770),
    ("滋賀県", "シガケン", 1414),
    ("京都府", "キョウトフ", 2578),
    ("大阪府", "オオサカフ", 8838),
    ("兵庫県", "ヒョウゴケン", 5465),
    ("奈良県", "ナラケン", 1324),
    ("和歌山県", "ワカヤマケン", 923),
    ("鳥取県", "トットリケン", 553),
    ("島根県", "シマネケン", 671),
    ("岡山県", "オカヤマケン", 1888),
    ("広島県", "ヒロシマケン", 2800),
    ("山口県", "ヤマグチケン", 1342),
    ("徳島県", "トクシマケン", 720),
    ("香川県", "カガワケン", 950),
    ("愛媛県", "エヒメケン", 1335),
    ("高知県", "コウチケン", 692),
    ("福岡県", "フクオカケン", 5135),
    ("佐賀県", "サガケン", 811),
    ("長崎県", "ナガサキケン", 1312),
    ("熊本県", "クマモトケン", 1738),
    ("大分県", "オオイタケン", 1124),
    ("宮崎県", "ミヤザキケン", 1070),
    ("鹿児島県", "カゴシマケン", 1588),
    ("沖縄県", "オキナワケン", 1467),
];

/// 2020 census population by five-year age band (0–4, 5–9, …, 95–99, 100+), in ten thousands.
pub const AGE_BANDS: [u32; 21] = [
    450, 502, 531, 561, 630, 639, 672, 764, 864, 978, 878, 790, 740, 817, 914, 700, 540, 390, 180,
    50, 8,
];

/// Age bands used by the prevalence columns: <20, 20–39, 40–64, 65–74, 75+.
pub fn prevalence_band(age: u32) -> usize {
    match age {
        0..=19 => 0,
        20..=39 => 1,
        40..=64 => 2,
        65..=74 => 3,
        _ => 4,
    }
}

/// Which sexes a condition occurs in, and how much more often in men.
#[derive(Clone, Copy, Debug)]
pub enum SexRule {
    /// Both, with the male rate multiplied by this factor relative to the female rate
    /// (prevalence column is the female rate).
    Both(f64),
    /// Men only.
    MaleOnly,
    /// Women only.
    FemaleOnly,
}

/// Clinical department (SS-MIX2 診療科 code, name).
pub type Dept = (&'static str, &'static str);
/// 内科
pub const INTERNAL: Dept = ("01", "内科");
/// 小児科
pub const PEDIATRICS: Dept = ("09", "小児科");
/// 整形外科
pub const ORTHO: Dept = ("11", "整形外科");
/// 精神科
pub const PSYCH: Dept = ("05", "精神科");
/// 外科
pub const SURGERY: Dept = ("10", "外科");
/// 皮膚科
pub const DERMA: Dept = ("13", "皮膚科");
/// 眼科
pub const OPHTHAL: Dept = ("16", "眼科");

/// A disease the generator can give a person.
#[derive(Debug)]
pub struct Disease {
    /// ICD-10 code with its dot (e.g. `E11.9`).
    pub icd10: &'static str,
    /// Japanese name.
    pub name: &'static str,
    /// Chronic: present from onset to the end of the window. Otherwise an acute episode.
    pub chronic: bool,
    /// Chronic: prevalence per age band; acute: episodes per person-year per age band.
    pub rate: [f64; 5],
    /// Sex rule.
    pub sex: SexRule,
    /// Department that treats it.
    pub dept: Dept,
    /// Drugs (indexes into [`DRUGS`]) prescribed for it.
    pub drugs: &'static [usize],
}

/// Diseases. Index positions are referred to by [`Condition`](crate::model::Condition).
pub const DISEASES: &[Disease] = &[
    Disease {
        icd10: "I10",
        name: "本態性（原発性＜一次性＞）高血圧（症）",
        chronic: true,
        rate: [0.0, 0.03, 0.20, 0.40, 0.50],
        sex: SexRule::Both(1.3),
        dept: INTERNAL,
        drugs: &[0, 1],
    },
    Disease {
        icd10: "E11.9",
        name: "２型＜インスリン非依存性＞糖尿病＜ＮＩＤＤＭ＞，合併症を伴わないもの",
        chronic: true,
        rate: [0.0, 0.01, 0.06, 0.12, 0.13],
        sex: SexRule::Both(1.8),
        dept: INTERNAL,
        drugs: &[2, 3],
    },
    Disease {
        icd10: "E78.5",
        name: "高脂血症，詳細不明",
        chronic: true,
        rate: [0.0, 0.03, 0.15, 0.25, 0.22],
        sex: SexRule::Both(0.9),
        dept: INTERNAL,
        drugs: &[4, 5],
    },
    Disease {
        icd10: "N18.3",
        name: "慢性腎臓病，ステージ３",
        chronic: true,
        rate: [0.0, 0.002, 0.03, 0.10, 0.20],
        sex: SexRule::Both(1.2),
        dept: INTERNAL,
        drugs: &[],
    },
    Disease {
        icd10: "J45.9",
        name: "喘息，詳細不明",
        chronic: true,
        rate: [0.06, 0.04, 0.04, 0.05, 0.05],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[6],
    },
    Disease {
        icd10: "K21.9",
        name: "食道炎を伴わない胃食道逆流症",
        chronic: true,
        rate: [0.005, 0.03, 0.06, 0.08, 0.08],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[7],
    },
    Disease {
        icd10: "E79.0",
        name: "炎症性関節炎及び痛風結節性疾患の徴候を伴わない高尿酸血症",
        chronic: true,
        rate: [0.0, 0.01, 0.02, 0.02, 0.02],
        sex: SexRule::Both(4.0),
        dept: INTERNAL,
        drugs: &[8],
    },
    Disease {
        icd10: "I20.9",
        name: "狭心症，詳細不明",
        chronic: true,
        rate: [0.0, 0.001, 0.01, 0.04, 0.07],
        sex: SexRule::Both(1.6),
        dept: INTERNAL,
        drugs: &[9],
    },
    Disease {
        icd10: "I50.9",
        name: "心不全，詳細不明",
        chronic: true,
        rate: [0.0, 0.0, 0.003, 0.02, 0.06],
        sex: SexRule::Both(1.1),
        dept: INTERNAL,
        drugs: &[10],
    },
    Disease {
        icd10: "I63.9",
        name: "脳梗塞，詳細不明",
        chronic: true,
        rate: [0.0, 0.0, 0.005, 0.02, 0.05],
        sex: SexRule::Both(1.4),
        dept: INTERNAL,
        drugs: &[11],
    },
    Disease {
        icd10: "F32.9",
        name: "うつ病エピソード，詳細不明",
        chronic: true,
        rate: [0.005, 0.03, 0.03, 0.02, 0.02],
        sex: SexRule::Both(0.6),
        dept: PSYCH,
        drugs: &[12],
    },
    Disease {
        icd10: "G47.0",
        name: "睡眠の導入及び維持の障害＜不眠症＞",
        chronic: true,
        rate: [0.002, 0.03, 0.05, 0.08, 0.12],
        sex: SexRule::Both(0.8),
        dept: INTERNAL,
        drugs: &[13],
    },
    Disease {
        icd10: "M81.9",
        name: "骨粗しょう症＜オステオポローシス＞，詳細不明",
        chronic: true,
        rate: [0.0, 0.0, 0.03, 0.12, 0.22],
        sex: SexRule::Both(0.2),
        dept: ORTHO,
        drugs: &[14],
    },
    Disease {
        icd10: "M17.9",
        name: "膝関節症，詳細不明",
        chronic: true,
        rate: [0.0, 0.002, 0.04, 0.10, 0.15],
        sex: SexRule::Both(0.6),
        dept: ORTHO,
        drugs: &[15],
    },
    Disease {
        icd10: "C18.9",
        name: "結腸の悪性新生物，結腸，部位不明",
        chronic: true,
        rate: [0.0, 0.0002, 0.003, 0.008, 0.01],
        sex: SexRule::Both(1.3),
        dept: SURGERY,
        drugs: &[],
    },
    Disease {
        icd10: "C16.9",
        name: "胃の悪性新生物，胃，部位不明",
        chronic: true,
        rate: [0.0, 0.0002, 0.003, 0.008, 0.01],
        sex: SexRule::Both(2.0),
        dept: SURGERY,
        drugs: &[],
    },
    Disease {
        icd10: "C34.9",
        name: "気管支又は肺の悪性新生物，部位不明",
        chronic: true,
        rate: [0.0, 0.0001, 0.002, 0.006, 0.008],
        sex: SexRule::Both(2.0),
        dept: SURGERY,
        drugs: &[],
    },
    Disease {
        icd10: "C50.9",
        name: "乳房の悪性新生物，乳房，部位不明",
        chronic: true,
        rate: [0.0, 0.001, 0.008, 0.008, 0.006],
        sex: SexRule::FemaleOnly,
        dept: SURGERY,
        drugs: &[],
    },
    Disease {
        icd10: "C61",
        name: "前立腺の悪性新生物",
        chronic: true,
        rate: [0.0, 0.0, 0.003, 0.015, 0.025],
        sex: SexRule::MaleOnly,
        dept: SURGERY,
        drugs: &[],
    },
    Disease {
        icd10: "J06.9",
        name: "急性上気道感染症，詳細不明",
        chronic: false,
        rate: [0.9, 0.4, 0.3, 0.25, 0.25],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[16, 17],
    },
    Disease {
        icd10: "A09",
        name: "感染症と推定される下痢及び胃腸炎",
        chronic: false,
        rate: [0.2, 0.08, 0.05, 0.05, 0.06],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[21],
    },
    Disease {
        icd10: "J11.1",
        name:
            "インフルエンザ，インフルエンザウイルスが分離されないもの，その他の呼吸器症状を伴うもの",
        chronic: false,
        rate: [0.12, 0.06, 0.05, 0.04, 0.04],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[18],
    },
    Disease {
        icd10: "J20.9",
        name: "急性気管支炎，詳細不明",
        chronic: false,
        rate: [0.08, 0.03, 0.03, 0.04, 0.06],
        sex: SexRule::Both(1.0),
        dept: INTERNAL,
        drugs: &[16],
    },
    Disease {
        icd10: "N39.0",
        name: "尿路感染症，部位不明",
        chronic: false,
        rate: [0.01, 0.02, 0.02, 0.04, 0.06],
        sex: SexRule::Both(0.25),
        dept: INTERNAL,
        drugs: &[19],
    },
    Disease {
        icd10: "L30.9",
        name: "皮膚炎，詳細不明",
        chronic: false,
        rate: [0.08, 0.05, 0.04, 0.04, 0.04],
        sex: SexRule::Both(0.9),
        dept: DERMA,
        drugs: &[22],
    },
    Disease {
        icd10: "H10.9",
        name: "結膜炎，詳細不明",
        chronic: false,
        rate: [0.06, 0.03, 0.02, 0.02, 0.02],
        sex: SexRule::Both(1.0),
        dept: OPHTHAL,
        drugs: &[23],
    },
    Disease {
        icd10: "M54.5",
        name: "腰痛症",
        chronic: false,
        rate: [0.01, 0.05, 0.08, 0.08, 0.08],
        sex: SexRule::Both(1.0),
        dept: ORTHO,
        drugs: &[20],
    },
    Disease {
        icd10: "S93.4",
        name: "足首の捻挫及びストレイン",
        chronic: false,
        rate: [0.03, 0.02, 0.01, 0.01, 0.01],
        sex: SexRule::Both(1.2),
        dept: ORTHO,
        drugs: &[22],
    },
];

/// Index of a disease by ICD-10 code (the model refers to a few by code).
pub fn disease_index(icd10: &str) -> Option<usize> {
    DISEASES.iter().position(|d| d.icd10 == icd10)
}

/// A drug as an order line: local code (no openly licensed HOT/YJ table was available, see
/// docs/synth.md), name, amount per dose, unit (MERIT-9 code, name), doses per day, usage
/// text, days for acute courses (chronic courses run 28 days).
#[derive(Debug)]
pub struct Drug {
    /// Local drug code of the synthetic formulary (code system `99SYN`).
    pub code: &'static str,
    /// Product name.
    pub name: &'static str,
    /// Amount per dose.
    pub per_dose: u32,
    /// MERIT-9 unit code and name.
    pub unit: (&'static str, &'static str),
    /// Doses per day.
    pub per_day: u32,
    /// Usage (用法) text.
    pub usage: &'static str,
    /// Route (HL7 table 0162).
    pub route: (&'static str, &'static str),
    /// Days of an acute course.
    pub acute_days: u32,
}

const PO: (&str, &str) = ("PO", "口");
const TAB: (&str, &str) = ("TAB", "錠");
const CAP: (&str, &str) = ("CAP", "カプセル");
const TOP: (&str, &str) = ("TP", "局所");

/// The synthetic formulary.
pub const DRUGS: &[Drug] = &[
    Drug {
        code: "SD0001",
        name: "アムロジピン錠５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0002",
        name: "カンデサルタン錠８ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0003",
        name: "メトホルミン塩酸塩錠２５０ｍｇ",
        per_dose: 2,
        unit: TAB,
        per_day: 2,
        usage: "１日２回朝夕食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0004",
        name: "シタグリプチン錠５０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0005",
        name: "ロスバスタチン錠２．５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回夕食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0006",
        name: "アトルバスタチン錠１０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回夕食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0007",
        name: "モンテルカスト錠１０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回就寝前",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0008",
        name: "ランソプラゾールＯＤ錠１５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0009",
        name: "フェブキソスタット錠２０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0010",
        name: "アスピリン腸溶錠１００ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0011",
        name: "フロセミド錠２０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0012",
        name: "クロピドグレル錠７５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0013",
        name: "セルトラリン錠２５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回夕食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0014",
        name: "ゾルピデム酒石酸塩錠５ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回就寝前",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0015",
        name: "エルデカルシトールカプセル０．７５μｇ",
        per_dose: 1,
        unit: CAP,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0016",
        name: "ロキソプロフェンナトリウム錠６０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 3,
        usage: "１日３回毎食後",
        route: PO,
        acute_days: 0,
    },
    Drug {
        code: "SD0017",
        name: "カルボシステイン錠５００ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 3,
        usage: "１日３回毎食後",
        route: PO,
        acute_days: 5,
    },
    Drug {
        code: "SD0018",
        name: "アセトアミノフェン錠２００ｍｇ",
        per_dose: 2,
        unit: TAB,
        per_day: 3,
        usage: "１日３回毎食後",
        route: PO,
        acute_days: 5,
    },
    Drug {
        code: "SD0019",
        name: "オセルタミビルカプセル７５ｍｇ",
        per_dose: 1,
        unit: CAP,
        per_day: 2,
        usage: "１日２回朝夕食後",
        route: PO,
        acute_days: 5,
    },
    Drug {
        code: "SD0020",
        name: "レボフロキサシン錠５００ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 1,
        usage: "１日１回朝食後",
        route: PO,
        acute_days: 5,
    },
    Drug {
        code: "SD0021",
        name: "ロキソプロフェンナトリウム錠６０ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 3,
        usage: "１日３回毎食後",
        route: PO,
        acute_days: 7,
    },
    Drug {
        code: "SD0022",
        name: "ビフィズス菌製剤錠１２ｍｇ",
        per_dose: 1,
        unit: TAB,
        per_day: 3,
        usage: "１日３回毎食後",
        route: PO,
        acute_days: 5,
    },
    Drug {
        code: "SD0023",
        name: "ヘパリン類似物質クリーム０．３％",
        per_dose: 1,
        unit: ("G", "ｇ"),
        per_day: 2,
        usage: "１日２回患部に塗布",
        route: TOP,
        acute_days: 14,
    },
    Drug {
        code: "SD0024",
        name: "レボフロキサシン点眼液１．５％",
        per_dose: 1,
        unit: ("DROP", "滴"),
        per_day: 4,
        usage: "１日４回点眼",
        route: ("OP", "眼"),
        acute_days: 7,
    },
];

/// A laboratory item.
#[derive(Debug)]
pub struct Lab {
    /// Short key used by the model and the flat table.
    pub key: &'static str,
    /// JLAC10 17-digit code.
    pub jlac10: &'static str,
    /// Japanese name.
    pub name: &'static str,
    /// UCUM-ish unit as Japanese lab systems print it.
    pub unit: &'static str,
    /// Reference range (low, high) as printed.
    pub range: (&'static str, &'static str),
    /// Decimal places of the result.
    pub decimals: usize,
}

/// Lab items. TP/ALB/AST codes are also in the SS-MIX2 sample files; see docs/synth.md.
pub const LABS: &[Lab] = &[
    Lab {
        key: "hba1c",
        jlac10: "3D046000001906202",
        name: "HbA1c（NGSP）",
        unit: "%",
        range: ("4.9", "6.0"),
        decimals: 1,
    },
    Lab {
        key: "glucose",
        jlac10: "3D010000001926101",
        name: "空腹時血糖",
        unit: "mg/dL",
        range: ("73", "109"),
        decimals: 0,
    },
    Lab {
        key: "ldl",
        jlac10: "3F077000002327101",
        name: "LDLコレステロール",
        unit: "mg/dL",
        range: ("65", "139"),
        decimals: 0,
    },
    Lab {
        key: "hdl",
        jlac10: "3F070000002327101",
        name: "HDLコレステロール",
        unit: "mg/dL",
        range: ("40", "90"),
        decimals: 0,
    },
    Lab {
        key: "tg",
        jlac10: "3F015000002327101",
        name: "中性脂肪",
        unit: "mg/dL",
        range: ("40", "149"),
        decimals: 0,
    },
    Lab {
        key: "ast",
        jlac10: "3B035000002327201",
        name: "GOT(AST)",
        unit: "U/L",
        range: ("13", "30"),
        decimals: 0,
    },
    Lab {
        key: "alt",
        jlac10: "3B045000002327201",
        name: "GPT(ALT)",
        unit: "U/L",
        range: ("10", "42"),
        decimals: 0,
    },
    Lab {
        key: "ggt",
        jlac10: "3B090000002327101",
        name: "γ-GT",
        unit: "U/L",
        range: ("13", "64"),
        decimals: 0,
    },
    Lab {
        key: "cre",
        jlac10: "3C015000002327101",
        name: "クレアチニン",
        unit: "mg/dL",
        range: ("0.46", "1.07"),
        decimals: 2,
    },
    Lab {
        key: "egfr",
        jlac10: "8A065000002391901",
        name: "eGFR",
        unit: "mL/min/1.73m2",
        range: ("60", ""),
        decimals: 1,
    },
    Lab {
        key: "ua",
        jlac10: "3C020000002327101",
        name: "尿酸",
        unit: "mg/dL",
        range: ("2.6", "7.0"),
        decimals: 1,
    },
];

/// A 特定健診 checkup item (code system OID 1.2.392.200119.6.1005).
#[derive(Debug)]
pub struct CheckupItem {
    /// 17-character item code.
    pub code: &'static str,
    /// Japanese name.
    pub name: &'static str,
    /// Unit, empty for coded results.
    pub unit: &'static str,
    /// Key of the measured value in the model (a lab key, or a vital).
    pub key: &'static str,
    /// Decimal places.
    pub decimals: usize,
}

/// Checkup items: body measurements, blood pressure and the blood tests of 特定健診.
pub const CHECKUP_ITEMS: &[CheckupItem] = &[
    CheckupItem {
        code: "9N001000000000001",
        name: "身長",
        unit: "cm",
        key: "height",
        decimals: 1,
    },
    CheckupItem {
        code: "9N006000000000001",
        name: "体重",
        unit: "kg",
        key: "weight",
        decimals: 1,
    },
    CheckupItem {
        code: "9N011000000000001",
        name: "ＢＭＩ",
        unit: "kg/m2",
        key: "bmi",
        decimals: 1,
    },
    CheckupItem {
        code: "9N016160100000001",
        name: "腹囲（実測）",
        unit: "cm",
        key: "waist",
        decimals: 1,
    },
    CheckupItem {
        code: "9A751000000000001",
        name: "収縮期血圧（１回目）",
        unit: "mmHg",
        key: "sbp",
        decimals: 0,
    },
    CheckupItem {
        code: "9A761000000000001",
        name: "拡張期血圧（１回目）",
        unit: "mmHg",
        key: "dbp",
        decimals: 0,
    },
    CheckupItem {
        code: "3F015000002327101",
        name: "中性脂肪（トリグリセリド）",
        unit: "mg/dl",
        key: "tg",
        decimals: 0,
    },
    CheckupItem {
        code: "3F070000002327101",
        name: "ＨＤＬコレステロール",
        unit: "mg/dl",
        key: "hdl",
        decimals: 0,
    },
    CheckupItem {
        code: "3F077000002327101",
        name: "ＬＤＬコレステロール",
        unit: "mg/dl",
        key: "ldl",
        decimals: 0,
    },
    CheckupItem {
        code: "3B035000002327201",
        name: "ＧＯＴ（ＡＳＴ）",
        unit: "U/l",
        key: "ast",
        decimals: 0,
    },
    CheckupItem {
        code: "3B045000002327201",
        name: "ＧＰＴ（ＡＬＴ）",
        unit: "U/l",
        key: "alt",
        decimals: 0,
    },
    CheckupItem {
        code: "3B090000002327101",
        name: "γ－ＧＴ（γ－ＧＴＰ）",
        unit: "U/l",
        key: "ggt",
        decimals: 0,
    },
    CheckupItem {
        code: "3D010000001926101",
        name: "空腹時血糖",
        unit: "mg/dl",
        key: "glucose",
        decimals: 0,
    },
    CheckupItem {
        code: "3D046000001906202",
        name: "ＨｂＡ１ｃ（ＮＧＳＰ値）",
        unit: "%",
        key: "hba1c",
        decimals: 1,
    },
    CheckupItem {
        code: "3C015000002327101",
        name: "血清クレアチニン",
        unit: "mg/dl",
        key: "cre",
        decimals: 2,
    },
    CheckupItem {
        code: "8A065000002391901",
        name: "eGFR",
        unit: "ml/min/1.73m2",
        key: "egfr",
        decimals: 1,
    },
];
