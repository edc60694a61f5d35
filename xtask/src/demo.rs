//! `gen-demo [--out DIR]`: the demo publisher site, "The Hearth Herald" (fictional), written
//! into www/demo: the ad catalog (catalog.json), one static page per article
//! (articles/<id>.html), the front page (index.html) and the ad landing page (landing.html).
//!
//! Everything comes from the tables below through a few templates. The only randomness is a
//! splitmix64 stream with fixed seeds, so the output is the same on every run and machine.
//! demo.css and landing.mjs are hand-written and not generated.

use hearth_core::device::catalog::Ad;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const SITE: &str = "The Hearth Herald";
/// The publisher snippet, exactly as a publisher would paste it. `data-helper` is `make demo`'s
/// helper (scripts/demo.sh), on an origin of its own: devices take its key from there, never from
/// the leader that serves the page.
pub const SNIPPET: &str = r#"<script async crossorigin="anonymous" src="/hearth.js" data-aggregator="/" data-helper="http://127.0.0.1:8001/" data-catalog="/v1/catalog.json"></script>"#;
pub const ADS_PER_TOPIC: usize = 30;
pub const ARTICLES_PER_TOPIC: usize = 6;
/// Creative limits (plain text, characters).
pub const MAX_TITLE: usize = 60;
pub const MAX_BODY: usize = 140;
pub const MAX_CTA: usize = 24;

struct Advertiser {
    slug: &'static str,
    name: &'static str,
    /// Plural noun phrase: "running shoes".
    product: &'static str,
    /// The part of the topic's vocabulary this advertiser's ads draw from.
    keywords: [&'static str; 4],
}

struct Topic {
    slug: &'static str,
    label: &'static str,
    /// Shared by articles (page keywords) and ads (`kw:` features). Nouns that read well in
    /// "a beginner's guide to …"; a hyphen shows as a space in prose.
    vocab: [&'static str; 12],
    advertisers: [Advertiser; 4],
}

const fn adv(slug: &'static str, name: &'static str, product: &'static str, keywords: [&'static str; 4]) -> Advertiser {
    Advertiser { slug, name, product, keywords }
}

#[rustfmt::skip]
const TOPICS: [Topic; 8] = [
    Topic {
        slug: "sports",
        label: "Sports",
        vocab: [
            "running", "marathons", "trails", "cycling", "football", "tennis", "swimming", "climbing", "yoga",
            "helmets", "tickets", "training",
        ],
        advertisers: [
            adv("stridewell", "Stridewell", "running shoes", ["running", "marathons", "trails", "training"]),
            adv("arenapass", "ArenaPass", "match tickets", ["football", "tennis", "tickets", "swimming"]),
            adv("cragworks", "Cragworks", "climbing packs", ["climbing", "trails", "yoga", "training"]),
            adv("velocita", "Velocita Cycles", "road bikes", ["cycling", "helmets", "training", "trails"]),
        ],
    },
    Topic {
        slug: "finance",
        label: "Finance",
        vocab: [
            "savings", "mortgages", "pensions", "budgeting", "investing", "index-funds", "credit", "taxes",
            "insurance", "banking", "retirement", "dividends",
        ],
        advertisers: [
            adv("plainbank", "Plainbank", "savings accounts", ["savings", "banking", "credit", "mortgages"]),
            adv("northfund", "Northfund", "low-cost index funds", ["investing", "index-funds", "dividends", "retirement"]),
            adv("tallybook", "Tallybook", "budgeting tools", ["budgeting", "taxes", "savings", "credit"]),
            adv("harbor-mutual", "Harbor Mutual", "pension plans", ["pensions", "insurance", "retirement", "mortgages"]),
        ],
    },
    Topic {
        slug: "travel",
        label: "Travel",
        vocab: [
            "museums", "flights", "hotels", "hiking", "beaches", "rail", "camping", "luggage", "islands",
            "city-breaks", "cruises", "passports",
        ],
        advertisers: [
            adv("wayfarer-rail", "Wayfarer Rail", "rail passes", ["rail", "city-breaks", "museums", "hiking"]),
            adv("bluegate-air", "Bluegate Air", "short-haul flights", ["flights", "islands", "beaches", "city-breaks"]),
            adv("nestaway", "Nestaway Stays", "boutique hotels", ["hotels", "beaches", "museums", "cruises"]),
            adv("packwise", "Packwise", "carry-on bags", ["luggage", "camping", "passports", "hiking"]),
        ],
    },
    Topic {
        slug: "tech",
        label: "Tech",
        vocab: [
            "laptops", "smartphones", "headphones", "privacy", "gaming", "cameras", "smart-homes", "wearables",
            "software", "batteries", "routers", "tablets",
        ],
        advertisers: [
            adv("lumora", "Lumora", "thin laptops", ["laptops", "tablets", "software", "batteries"]),
            adv("quietbyte", "Quietbyte", "noise-cancelling headphones", ["headphones", "gaming", "wearables", "batteries"]),
            adv("hexa-mobile", "Hexa Mobile", "unlocked smartphones", ["smartphones", "cameras", "privacy", "wearables"]),
            adv("ferrowire", "Ferrowire", "mesh routers", ["routers", "smart-homes", "privacy", "gaming"]),
        ],
    },
    Topic {
        slug: "food",
        label: "Food",
        vocab: [
            "recipes", "baking", "coffee", "vegetables", "pasta", "grilling", "cheese", "wine", "spices",
            "breakfast", "meal-kits", "street-food",
        ],
        advertisers: [
            adv("crumb-and-co", "Crumb & Co", "baking kits", ["baking", "breakfast", "recipes", "cheese"]),
            adv("kettle-hill", "Kettle Hill Coffee", "fresh-roasted beans", ["coffee", "breakfast", "baking", "spices"]),
            adv("greenfork", "Greenfork", "weekly meal kits", ["meal-kits", "vegetables", "pasta", "recipes"]),
            adv("ember-grill", "Ember Grill Works", "charcoal grills", ["grilling", "spices", "street-food", "wine"]),
        ],
    },
    Topic {
        slug: "health",
        label: "Health",
        vocab: [
            "sleep", "fitness", "nutrition", "vitamins", "meditation", "skincare", "allergies", "hydration",
            "posture", "stretching", "eyesight", "checkups",
        ],
        advertisers: [
            adv("restwell", "Restwell", "memory-foam mattresses", ["sleep", "posture", "stretching", "meditation"]),
            adv("vitalis-labs", "Vitalis Labs", "daily vitamins", ["vitamins", "nutrition", "hydration", "allergies"]),
            adv("stillpoint", "Stillpoint", "guided meditation courses", ["meditation", "sleep", "fitness", "stretching"]),
            adv("clearview", "Clearview Clinics", "skin and eye exams", ["eyesight", "checkups", "skincare", "allergies"]),
        ],
    },
    Topic {
        slug: "home",
        label: "Home",
        vocab: [
            "gardening", "furniture", "lighting", "kitchens", "insulation", "paint", "flooring", "storage",
            "houseplants", "heating", "cleaning", "bedding",
        ],
        advertisers: [
            adv("rootsy", "Rootsy Garden", "garden tools", ["gardening", "houseplants", "storage", "cleaning"]),
            adv("oakhaus", "Oakhaus", "solid-wood tables", ["furniture", "kitchens", "flooring", "storage"]),
            adv("glowhaven", "Glowhaven", "warm LED lamps", ["lighting", "bedding", "paint", "furniture"]),
            adv("snugwall", "Snugwall", "insulation fittings", ["insulation", "heating", "flooring", "paint"]),
        ],
    },
    Topic {
        slug: "autos",
        label: "Autos",
        vocab: [
            "electric-cars", "hybrids", "tyres", "charging", "crossovers", "motorcycles", "servicing",
            "road-trips", "parking", "used-cars", "leasing", "safety",
        ],
        advertisers: [
            adv("voltway", "Voltway", "electric hatchbacks", ["electric-cars", "hybrids", "charging", "crossovers"]),
            adv("gripmaster", "Gripmaster Tyres", "all-season tyres", ["tyres", "safety", "servicing", "road-trips"]),
            adv("chargenest", "ChargeNest", "home chargers", ["charging", "electric-cars", "parking", "hybrids"]),
            adv("roadmate", "Roadmate Leasing", "flexible car leases", ["leasing", "used-cars", "crossovers", "motorcycles"]),
        ],
    },
];

const CAMPAIGNS: [&str; 2] = ["spring", "autumn"];

// Creative templates: {name} {product} {Product} {kw} {kw2} {season} {Season} {topic}.
const AD_TITLES: [&str; 4] = [
    "Into {kw}? Meet {name}",
    "{name}: {product} for {season}",
    "{Season} at {name}: {product}",
    "Made for {kw}: {product} by {name}",
];
const AD_BODIES: [&str; 4] = [
    "{name} has {product} for {kw} and {kw2}. Herald readers get a welcome offer this {season}.",
    "Serious about {kw}? {Product} from {name}, now at {season} prices.",
    "From {kw} to {kw2}, {name} keeps it simple. See the {season} range of {product}.",
    "{Product}, chosen by {topic} readers who care about {kw}. New for {season}.",
];
const AD_CTAS: [&str; 5] = ["Learn more", "See the offer", "Find out more", "Get started", "Take a look"];

// Article templates: {k} {K} {k2} {k3} {topic} {town} {person} {n} {m}.
const ARTICLE_TITLES: [&str; ARTICLES_PER_TOPIC] = [
    "{K} season: what to expect this year",
    "A beginner's guide to {k}",
    "Why more readers are turning to {k}",
    "{K} and {k2}: five things we learned",
    "The quiet comeback of {k}",
    "Ask the Herald: how to spend less on {k}",
];
const LEDES: [&str; 6] = [
    "Interest in {k} has climbed steadily over the past year, according to figures gathered by the Herald's {topic} desk.",
    "Ask anyone in {town} about {k} and you will get an opinion, usually a strong one.",
    "For years, interest in {k} was a niche concern; this season it is hard to avoid.",
    "A new survey of {m} Herald readers suggests that more of them than ever are thinking about {k}.",
    "When we asked readers what they wanted to know about {k}, the questions arrived by the hundred.",
    "The numbers around {k} have moved quietly but steadily, and those around {k2} have moved with them.",
];
const QUOTES: [&str; 5] = [
    "“People come for the {k} and stay for the {k2},” said {person}, who has followed the scene in {town} for more than a decade.",
    "“If you get {k} right, the rest tends to take care of itself,” {person} told the Herald.",
    "“Nobody expected {k2} to matter this much,” admitted {person}, speaking from {town}.",
    "{person}, a longtime reader from {town}, put it plainly: “Start with {k}, and be patient.”",
    "“The mistake is to treat {k} as a quick fix,” said {person}. “It rewards steady habits.”",
];
const BODY: [&str; 12] = [
    "Local shops and clubs in {town} report that anything to do with {k} now accounts for roughly {n} percent of their weekend trade.",
    "Not everyone is convinced: critics argue that the fuss about {k} says more about marketing than about real demand.",
    "For newcomers the advice is simple: start small, ask questions and do not spend much on {k2} until you know what you need.",
    "Of the readers who answered our survey, {n} percent said they had tried something new with {k} in the last twelve months.",
    "Prices connected to {k2} have been stable this season, which experts put down to steady supply and cautious buyers.",
    "The council in {town} is expected to publish guidance touching on {k} before the end of the year.",
    "Online forums about {k} have doubled in size, with threads on {k2} and {k3} drawing the most replies.",
    "Some of the changes are small, such as a new habit around {k3}, but readers say they add up.",
    "Experts we spoke to agreed on one point: when it comes to {k}, patience matters more than money.",
    "The link between {k} and {k3} surprised several of the people we interviewed.",
    "Weekend events in {town} devoted to {k2} sold out weeks in advance.",
    "Spending on {k3} is up as well, though from a much smaller base.",
];
const CLOSINGS: [&str; 4] = [
    "Whether the boom in {k} lasts is an open question, but for now the mood in {town} is upbeat.",
    "We will keep following the story; readers with their own experience of {k} can write to the {topic} desk.",
    "For now, the message from {town} is clear: the appetite for {k} is not going away, and neither is the appetite for {k2}.",
    "Next month the Herald looks at {k3}, and at what that means for everyone who follows {k}.",
];
const PEOPLE: [&str; 8] = [
    "Mara Ellison",
    "Tomas Reyes",
    "Priya Nandakumar",
    "Jonah Whitfield",
    "Ines Cardoso",
    "Rafe Okonkwo",
    "Lena Marsh",
    "Dev Halloran",
];
const TOWNS: [&str; 6] = ["Millbrook", "Ashford Vale", "Port Leary", "Kestrel Bay", "Northam Cross", "Elderwick"];
const WRITERS: [&str; 4] = ["Hannah Quill", "Oscar Bellamy", "June Farrow", "Samir Castell"];

/// splitmix64: a fixed seed gives the same stream everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x4845_4152_5448)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
    /// `k` distinct items, in a shuffled order (partial Fisher–Yates).
    fn sample<T: Copy>(&mut self, from: &[T], k: usize) -> Vec<T> {
        let mut v = from.to_vec();
        for i in 0..k.min(v.len()) {
            let j = i + self.below(v.len() - i);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}

pub struct Article {
    pub id: String,
    pub topic: &'static str,
    pub topic_label: &'static str,
    pub title: String,
    pub keywords: Vec<&'static str>,
    pub writer: &'static str,
    pub paragraphs: Vec<String>,
}

impl Article {
    pub fn summary(&self) -> &str {
        let p = &self.paragraphs[0];
        p.find(". ").map_or(p.as_str(), |i| &p[..=i])
    }
}

pub struct Demo {
    pub ads: Vec<Ad>,
    /// Ad id → {title, body, cta, url}.
    pub creatives: Map<String, Value>,
    pub articles: Vec<Article>,
}

/// A keyword as prose: "index-funds" → "index funds".
fn prose(kw: &str) -> String {
    kw.replace('-', " ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn build_ads(ti: usize, t: &Topic, ads: &mut Vec<Ad>, creatives: &mut Map<String, Value>) -> Result<(), String> {
    let mut rng = Rng::new(1_000 + ti as u64);
    for j in 0..ADS_PER_TOPIC {
        let a = &t.advertisers[j % t.advertisers.len()];
        let round = j / t.advertisers.len();
        let season = CAMPAIGNS[round % CAMPAIGNS.len()];
        let id = format!("{}-{:02}", t.slug, j + 1);
        let n = 2 + rng.below(2);
        let kws = rng.sample(&a.keywords, n);
        let mut features = vec![format!("topic:{}", t.slug)];
        features.extend(kws.iter().map(|k| format!("kw:{k}")));
        let (kw, kw2) = (prose(kws[0]), prose(kws[1]));
        let vars = [
            ("name", a.name),
            ("product", a.product),
            ("Product", &capitalize(a.product)),
            ("kw", &kw),
            ("kw2", &kw2),
            ("season", season),
            ("Season", &capitalize(season)),
            ("topic", &t.label.to_lowercase()),
        ];
        let title = fill(AD_TITLES[round % AD_TITLES.len()], &vars);
        let body = fill(AD_BODIES[(round + j) % AD_BODIES.len()], &vars);
        let cta = AD_CTAS[j % AD_CTAS.len()];
        for (what, text, max) in [("title", &title, MAX_TITLE), ("body", &body, MAX_BODY), ("cta", &cta.into(), MAX_CTA)] {
            if text.chars().count() > max {
                return Err(format!("ad {id}: {what} {text:?} is longer than {max} characters"));
            }
        }
        let url = format!("/demo/landing.html?ad={id}");
        creatives.insert(id.clone(), json!({"title": title, "body": body, "cta": cta, "url": url}));
        ads.push(Ad {
            id,
            campaign: Some(format!("{}-{season}", a.slug)),
            advertiser: Some(a.slug.into()),
            category: Some(t.slug.into()),
            features,
        });
    }
    Ok(())
}

fn build_article(ti: usize, t: &Topic, i: usize) -> Article {
    let mut rng = Rng::new(((ti as u64) << 8) | i as u64);
    let (k1, k2) = (t.vocab[2 * i], t.vocab[2 * i + 1]);
    let rest: Vec<&str> = t.vocab.iter().copied().filter(|k| *k != k1 && *k != k2).collect();
    let k3 = rng.pick(&rest);
    let (k, kk2, kk3) = (prose(k1), prose(k2), prose(k3));
    let n = (12 + rng.below(50)).to_string();
    let m = (400 + 50 * rng.below(30)).to_string();
    let vars = [
        ("K", capitalize(&k)),
        ("k", k),
        ("k2", kk2),
        ("k3", kk3),
        ("topic", t.label.to_lowercase()),
        ("town", rng.pick(&TOWNS).into()),
        ("person", rng.pick(&PEOPLE).into()),
        ("n", n),
        ("m", m),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let f = |s: &str| capitalize(&fill(s, &vars));
    let body: Vec<String> = rng.sample(&BODY, 5).into_iter().map(f).collect();
    let closing = f(rng.pick(&CLOSINGS));
    let mut paragraphs =
        vec![format!("{} {}", f(LEDES[(ti + i) % LEDES.len()]), body[0]), format!("{} {}", f(rng.pick(&QUOTES)), body[1])];
    if i.is_multiple_of(2) {
        paragraphs.push(format!("{} {}", body[2], body[3]));
        paragraphs.push(format!("{} {closing}", body[4]));
    } else {
        paragraphs.push(format!("{} {} {closing}", body[2], body[3]));
    }
    Article {
        id: format!("{}-{k1}", t.slug),
        topic: t.slug,
        topic_label: t.label,
        title: f(ARTICLE_TITLES[i]),
        keywords: vec![k1, k2, k3],
        writer: rng.pick(&WRITERS),
        paragraphs,
    }
}

pub fn build() -> Result<Demo, String> {
    let mut ads = Vec::new();
    let mut creatives = Map::new();
    let mut articles = Vec::new();
    for (ti, t) in TOPICS.iter().enumerate() {
        if let Some(k) = t.advertisers.iter().flat_map(|a| a.keywords).find(|k| !t.vocab.contains(k)) {
            return Err(format!("topic {}: advertiser keyword {k:?} is not in its vocabulary", t.slug));
        }
        build_ads(ti, t, &mut ads, &mut creatives)?;
        articles.extend((0..ARTICLES_PER_TOPIC).map(|i| build_article(ti, t, i)));
    }
    Ok(Demo { ads, creatives, articles })
}

/// `<head>` through the site header. `root` is the path from the page to www/demo ("" or "../").
fn page_start(out: &mut String, root: &str, title: &str, meta: &str, body_attrs: &str) {
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{root}demo.css">
{meta}</head>
<body{body_attrs}>
  <header class="site">
    <a class="brand" href="{root}index.html">{site}</a>
    <nav>
"#,
        title = escape(title),
        site = escape(SITE),
    );
    for t in &TOPICS {
        let _ = writeln!(out, r#"      <a href="{root}index.html#{}">{}</a>"#, t.slug, escape(t.label));
    }
    let _ = write!(
        out,
        r#"      <a class="profile-link" href="{root}profile.html">Your ad profile</a>
    </nav>
  </header>
"#
    );
}

fn page_end(out: &mut String, root: &str) {
    let _ = write!(
        out,
        r#"  <footer class="site muted">
    <p>{site} is a fictional newspaper made up for the Hearth demo; its stories and advertisers are invented.
      Ads on these pages are chosen inside your browser from what you read here.
      <a href="{root}profile.html">See and erase your ad profile</a>.</p>
  </footer>
</body>
</html>
"#,
        site = escape(SITE),
    );
}

fn article_page(a: &Article, topic: &[&Article]) -> String {
    let mut out = String::new();
    let meta = format!(
        "  <meta name=\"hearth:topics\" content=\"{}\">\n  <meta name=\"hearth:keywords\" content=\"{}\">\n  {SNIPPET}\n",
        escape(a.topic),
        escape(&a.keywords.join(",")),
    );
    let title = format!("{} — {SITE}", a.title);
    page_start(&mut out, "../", &title, &meta, &format!(" data-topic=\"{}\"", escape(a.topic)));
    let _ = write!(
        out,
        r#"  <div class="layout">
    <main>
      <article data-article-id="{id}">
        <p class="topic-label"><a href="../index.html#{topic}">{label}</a></p>
        <h1>{title}</h1>
        <p class="byline muted">By {writer}</p>
"#,
        id = escape(&a.id),
        topic = escape(a.topic),
        label = escape(a.topic_label),
        title = escape(&a.title),
        writer = escape(a.writer),
    );
    for (i, p) in a.paragraphs.iter().enumerate() {
        let _ = writeln!(out, "        <p>{}</p>", escape(p));
        if i == 1 {
            out.push_str("        <div data-hearth-slot=\"in-article\"></div>\n");
        }
    }
    let _ = write!(
        out,
        "      </article>\n      <section class=\"more\">\n        <h2>More in {}</h2>\n        <ul>\n",
        escape(a.topic_label)
    );
    for other in topic.iter().filter(|o| o.id != a.id) {
        let _ = writeln!(out, r#"          <li><a href="{}.html">{}</a></li>"#, escape(&other.id), escape(&other.title));
    }
    out.push_str(
        "        </ul>\n      </section>\n    </main>\n    <aside><div data-hearth-slot=\"sidebar\"></div></aside>\n  </div>\n",
    );
    page_end(&mut out, "../");
    out
}

fn index_page(articles: &[Article]) -> String {
    let mut out = String::new();
    page_start(&mut out, "", &format!("{SITE} — news for curious people"), &format!("  {SNIPPET}\n"), "");
    out.push_str("  <div class=\"layout\">\n    <main>\n");
    for (ti, t) in TOPICS.iter().enumerate() {
        let _ = write!(
            out,
            "      <section id=\"{}\" class=\"topic\">\n        <h2>{}</h2>\n        <ul class=\"stories\">\n",
            t.slug,
            escape(t.label)
        );
        for a in articles.iter().filter(|a| a.topic == t.slug) {
            let _ = write!(
                out,
                "          <li>\n            <a href=\"articles/{}.html\">{}</a>\n            <p class=\"muted\">{}</p>\n          </li>\n",
                escape(&a.id),
                escape(&a.title),
                escape(a.summary()),
            );
        }
        out.push_str("        </ul>\n      </section>\n");
        if ti == 1 {
            out.push_str("      <div data-hearth-slot=\"in-article\"></div>\n");
        }
    }
    out.push_str("    </main>\n    <aside><div data-hearth-slot=\"sidebar\"></div></aside>\n  </div>\n");
    page_end(&mut out, "");
    out
}

fn landing_page() -> String {
    let mut out = String::new();
    page_start(&mut out, "", &format!("Thanks for visiting — {SITE}"), "", "");
    let _ = write!(
        out,
        r#"  <main class="landing card">
    <h1>You followed ad <span id="ad-id">…</span></h1>
    <p id="ad-title"></p>
    <p class="muted">This is the demo's stand-in for an advertiser's site. The advertisers are fictional,
      so there is nothing to buy here.</p>
    <p><a href="index.html">Back to the front page</a> · <a href="profile.html">Your ad profile</a></p>
  </main>
  <script type="module" src="./landing.mjs"></script>
"#
    );
    page_end(&mut out, "");
    out
}

/// Every generated file, as (path relative to www/demo, contents).
pub fn render(demo: &Demo) -> Result<Vec<(String, String)>, String> {
    let catalog = json!({"ads": demo.ads, "creatives": demo.creatives});
    let mut files = vec![
        ("catalog.json".to_string(), serde_json::to_string_pretty(&catalog).map_err(|e| e.to_string())? + "\n"),
        ("index.html".to_string(), index_page(&demo.articles)),
        ("landing.html".to_string(), landing_page()),
    ];
    for a in &demo.articles {
        let same: Vec<&Article> = demo.articles.iter().filter(|o| o.topic == a.topic).collect();
        files.push((format!("articles/{}.html", a.id), article_page(a, &same)));
    }
    Ok(files)
}

/// Writes the site into `out`; stale pages in `out/articles` are removed (the generator owns it).
pub fn write(out: &Path) -> Result<(Demo, Vec<(String, String)>), String> {
    let demo = build()?;
    let files = render(&demo)?;
    let dir = out.join("articles");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "html") {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    for (rel, text) in &files {
        let path = out.join(rel);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok((demo, files))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory the site is written to.
    #[arg(long, value_name = "DIR", default_value = "www/demo")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<(), String> {
    let out = args.out;
    let (demo, files) = write(&out)?;
    println!("wrote {}: {} ads, {} articles, {} files", out.display(), demo.ads.len(), demo.articles.len(), files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::device::catalog::Catalog;
    use std::collections::{BTreeSet, HashSet};

    /// The values of every `attr="…"` in an HTML page.
    fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        html.match_indices(&needle)
            .map(|(i, _)| {
                let rest = &html[i + needle.len()..];
                &rest[..rest.find('"').expect("unterminated attribute")]
            })
            .collect()
    }

    fn manifest_spec() -> hearth_core::model::features::FeatureSpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default/manifest.json");
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
        serde_json::from_value(manifest["features"].clone()).unwrap()
    }

    #[test]
    fn generated_demo_is_valid_and_self_contained() {
        let tmp = std::env::temp_dir().join(format!("hearth-gen-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let (demo, files) = write(&tmp).unwrap();

        // The catalog as the browser reads it: parses into hearth-core ads and validates
        // against the default pack's features.
        let catalog: Value = serde_json::from_str(&std::fs::read_to_string(tmp.join("catalog.json")).unwrap()).unwrap();
        let ads: Vec<Ad> = serde_json::from_value(catalog["ads"].clone()).unwrap();
        assert_eq!(ads, demo.ads);
        assert!(ads.len() >= 200, "{} ads", ads.len());
        let spec = manifest_spec();
        assert_eq!(spec, crate::default_spec());
        Catalog::new(ads.clone(), &spec).unwrap();

        let creatives = catalog["creatives"].as_object().unwrap();
        assert_eq!(creatives.len(), ads.len());
        let vocab: HashSet<&str> = TOPICS.iter().flat_map(|t| t.vocab).collect();
        for ad in &ads {
            let c = creatives.get(&ad.id).unwrap_or_else(|| panic!("no creative for {}", ad.id));
            let c = c.as_object().unwrap();
            assert_eq!(
                c.keys().collect::<BTreeSet<_>>(),
                BTreeSet::from([&"body".into(), &"cta".into(), &"title".into(), &"url".into()])
            );
            for (k, max) in [("title", MAX_TITLE), ("body", MAX_BODY), ("cta", MAX_CTA)] {
                let text = c[k].as_str().unwrap();
                assert!(!text.is_empty() && text.chars().count() <= max, "{}: {k} {text:?}", ad.id);
                assert!(!text.contains(['<', '>', '{', '}']), "{}: {k} {text:?}", ad.id);
            }
            assert_eq!(c["url"], format!("/demo/landing.html?ad={}", ad.id));
            let kws: Vec<&str> = ad.features.iter().filter_map(|f| f.strip_prefix("kw:")).collect();
            assert!((2..=3).contains(&kws.len()), "{}: {:?}", ad.id, ad.features);
            assert!(kws.iter().all(|k| vocab.contains(k)), "{}: {kws:?}", ad.id);
        }
        for t in &TOPICS {
            let advertisers: HashSet<_> =
                ads.iter().filter(|a| a.category.as_deref() == Some(t.slug)).map(|a| &a.advertiser).collect();
            assert!((3..=5).contains(&advertisers.len()));
        }

        // Articles: keywords from the shared vocabulary, in the page's meta.
        assert_eq!(demo.articles.len(), TOPICS.len() * ARTICLES_PER_TOPIC);
        for a in &demo.articles {
            assert!(!a.keywords.is_empty() && a.keywords.iter().all(|k| vocab.contains(k)), "{}", a.id);
            let html = std::fs::read_to_string(tmp.join(format!("articles/{}.html", a.id))).unwrap();
            assert!(html.contains(&format!("<meta name=\"hearth:keywords\" content=\"{}\">", a.keywords.join(","))));
            assert!(html.contains(&format!("<meta name=\"hearth:topics\" content=\"{}\">", a.topic)));
            assert!(html.contains(SNIPPET));
            assert!(html.contains(r#"<aside><div data-hearth-slot="sidebar"></div></aside>"#));
            assert_eq!(html.matches(r#"<div data-hearth-slot="in-article"></div>"#).count(), 1);
            assert!(!html.contains('{'), "{}: unfilled template", a.id);
        }
        let index = std::fs::read_to_string(tmp.join("index.html")).unwrap();
        assert!(index.contains(SNIPPET) && !index.contains("hearth:topics"));

        // Every link and script in every page resolves to a generated file or to one written by
        // hand beside them (profile.html, landing.mjs, demo.css).
        let generated: HashSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
        let external = ["profile.html", "landing.mjs", "demo.css"];
        for (page, html) in files.iter().filter(|(p, _)| p.ends_with(".html")) {
            let base = Path::new(page).parent().unwrap();
            let urls =
                attr_values(html, "href").into_iter().chain(attr_values(html, "src")).chain(attr_values(html, "data-catalog"));
            for url in urls {
                // The snippet's script and the aggregator's API are served from outside www/demo.
                if url.starts_with("data:") || url == "/hearth.js" || url == "/" || url.starts_with("/v1/") {
                    continue;
                }
                let (path, fragment) = url.split_once('#').unwrap_or((url, ""));
                let path = path.split('?').next().unwrap();
                let target = match path.strip_prefix("/demo/") {
                    Some(p) => PathBuf::from(p),
                    None => {
                        assert!(!path.starts_with('/') && !path.contains(':'), "{page}: {url}");
                        let mut t = base.to_path_buf();
                        for part in path.split('/') {
                            match part {
                                ".." => assert!(t.pop(), "{page}: {url} leaves www/demo"),
                                "." => {}
                                p => t.push(p),
                            }
                        }
                        t
                    }
                };
                let target = target.to_str().unwrap().to_string();
                assert!(generated.contains(&target) || external.contains(&target.as_str()), "{page}: {url} → {target}");
                if !fragment.is_empty() {
                    let doc = &files.iter().find(|(p, _)| *p == target).unwrap().1;
                    assert!(doc.contains(&format!(" id=\"{fragment}\"")), "{page}: {url}");
                }
            }
        }
        for c in creatives.values() {
            let url = c["url"].as_str().unwrap();
            assert!(generated.contains(url.strip_prefix("/demo/").unwrap().split('?').next().unwrap()));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn generation_is_deterministic_and_committed_files_are_current() {
        let a = render(&build().unwrap()).unwrap();
        let b = render(&build().unwrap()).unwrap();
        assert_eq!(a, b);
        let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/demo");
        for (rel, text) in &a {
            let committed = std::fs::read_to_string(www.join(rel)).unwrap_or_default();
            assert!(committed == *text, "www/demo/{rel} is stale: run `cargo run -p xtask --release -- gen-demo`");
        }
        for hand_written in ["demo.css", "landing.mjs"] {
            assert!(www.join(hand_written).is_file(), "www/demo/{hand_written}");
        }
    }

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(escape(r#"<a href="x">Crumb & Co's</a>"#), "&lt;a href=&quot;x&quot;&gt;Crumb &amp; Co&#39;s&lt;/a&gt;");
    }
}
