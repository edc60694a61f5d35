//! MovieLens-style data: `ratings.csv` (userId,movieId,rating,timestamp), `movies.csv`
//! (movieId,title,genres with `|` between genres) and `tags.csv` (userId,movieId,tag,timestamp;
//! may be empty or absent). Any directory with that layout works.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    pub id: u32,
    pub title: String,
    pub genres: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    pub user: u32,
    pub movie: u32,
    pub rating: f32,
    /// Seconds since the epoch, as MovieLens stores them.
    pub ts: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub movies: Vec<Movie>,
    /// Tags per movie, lower-cased, most used first.
    pub tags: BTreeMap<u32, Vec<String>>,
    pub ratings: Vec<Rating>,
}

#[derive(Debug)]
pub struct DataError(pub String);

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, DataError> {
    csv::Reader::from_path(path).map_err(|e| DataError(format!("{}: {e}", path.display())))
}

fn field<T: std::str::FromStr>(rec: &csv::StringRecord, i: usize, path: &Path) -> Result<T, DataError> {
    rec.get(i)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| DataError(format!("{}: line {}: bad field {i}", path.display(), rec.position().map_or(0, |p| p.line()))))
}

impl Dataset {
    pub fn load(dir: &Path) -> Result<Dataset, DataError> {
        let path = dir.join("movies.csv");
        let mut movies = Vec::new();
        for rec in reader(&path)?.records() {
            let rec = rec.map_err(|e| DataError(format!("{}: {e}", path.display())))?;
            let genres = rec.get(2).unwrap_or("");
            movies.push(Movie {
                id: field(&rec, 0, &path)?,
                title: rec.get(1).unwrap_or("").to_string(),
                genres: genres
                    .split('|')
                    .filter(|g| !g.is_empty() && *g != "(no genres listed)")
                    .map(str::to_lowercase)
                    .collect(),
            });
        }
        let path = dir.join("ratings.csv");
        let mut ratings = Vec::new();
        for rec in reader(&path)?.records() {
            let rec = rec.map_err(|e| DataError(format!("{}: {e}", path.display())))?;
            ratings.push(Rating {
                user: field(&rec, 0, &path)?,
                movie: field(&rec, 1, &path)?,
                rating: field(&rec, 2, &path)?,
                ts: field(&rec, 3, &path)?,
            });
        }
        let path = dir.join("tags.csv");
        let mut counts: BTreeMap<u32, BTreeMap<String, usize>> = BTreeMap::new();
        if path.exists() && std::fs::metadata(&path).map_or(0, |m| m.len()) > 0 {
            for rec in reader(&path)?.records() {
                let rec = rec.map_err(|e| DataError(format!("{}: {e}", path.display())))?;
                let tag = rec.get(2).unwrap_or("").trim().to_lowercase();
                if !tag.is_empty() {
                    *counts.entry(field(&rec, 1, &path)?).or_default().entry(tag).or_default() += 1;
                }
            }
        }
        let tags = counts
            .into_iter()
            .map(|(movie, c)| {
                let mut c: Vec<(String, usize)> = c.into_iter().collect();
                c.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                (movie, c.into_iter().map(|(t, _)| t).collect())
            })
            .collect();
        if ratings.is_empty() {
            return Err(DataError(format!("{}: no ratings", dir.display())));
        }
        Ok(Dataset { movies, tags, ratings })
    }
}
