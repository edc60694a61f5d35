//! What a device runs: one model, one profile, one catalog, and the cached ad side of that
//! catalog under that model. The browser shell wraps this and nothing more.

use crate::device::catalog::{Ad, Catalog, Context};
use crate::device::event::Event;
use crate::device::explain::Explainer;
use crate::device::profile::Profile;
use crate::device::rank::{self, RankOptions, Ranked};
use crate::error::{HearthError, Result};
use crate::model::features::{FeatureSpec, Slots};
use crate::model::forward;
use crate::model::pack::ModelPack;
use crate::model::scorer::{Request, Scorer};
use std::borrow::Cow;

/// One visitor's ranker: a loaded pack and its tract [`Scorer`], the [`Profile`], the device-only
/// local embedding and the installed [`Catalog`] with its cached ad side. Learning methods
/// (`examples`, `train`) are added by `learning::round`.
pub struct Engine {
    pack: ModelPack,
    scorer: Scorer,
    profile: Profile,
    /// The device-only user embedding; zero until local training fits it.
    local_u: Vec<f32>,
    catalog: Catalog,
    /// Ad-side rows of `catalog` under the current model, `catalog.len() × scorer.width()`.
    catalog_side: Vec<f32>,
}

impl Engine {
    /// An engine with an empty catalog and a zero local embedding; fails only if the pack's graph
    /// cannot be cut at `ad_side` or planned by tract.
    pub fn new(pack: ModelPack, profile: Profile) -> Result<Engine> {
        let scorer = Scorer::new(&pack)?;
        let local_u = vec![0.0; pack.params.arch.dim];
        let catalog = Catalog::new(Vec::new(), &pack.manifest.features)?;
        Ok(Engine { pack, scorer, profile, local_u, catalog, catalog_side: Vec::new() })
    }

    /// The loaded model pack; its `manifest.model_version` is what round tasks are checked against.
    pub fn pack(&self) -> &ModelPack {
        &self.pack
    }

    /// The pack's feature spec, which events, ads and context are hashed under.
    pub fn spec(&self) -> &FeatureSpec {
        &self.pack.manifest.features
    }

    /// The visitor's profile, for the shell to store.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The tract scorer of the loaded pack.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The installed catalog (empty until [`Engine::set_catalog`]).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Ad-side rows of the installed catalog, `catalog().len() × scorer().width()`: what another
    /// scorer (the GPU one) needs besides the request side to compute the logits.
    pub fn catalog_side(&self) -> &[f32] {
        &self.catalog_side
    }

    /// Records an event in the profile (see [`Profile::record`]).
    pub fn record(&mut self, event: Event) -> Result<()> {
        self.profile.record(event)
    }

    /// Remembers the ad now shown in a slot (see [`Profile::note_shown`]).
    pub fn note_shown(&mut self, slot: &str, ad_id: &str) -> Result<()> {
        self.profile.note_shown(slot, ad_id)
    }

    /// Replaces the profile (another tab of the same device changed the stored one); the local
    /// embedding stays, it belongs to the device.
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = profile;
    }

    /// Forgets the visitor: clears the profile's events and weights and zeroes the local
    /// embedding. The configuration, model and catalog stay.
    pub fn erase_profile(&mut self) {
        self.profile.erase();
        self.local_u.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Swaps in a new model. The catalog is re-hashed under the new feature spec and its ad
    /// side recomputed; on any error the old model stays.
    pub fn set_model(&mut self, pack: ModelPack) -> Result<()> {
        let scorer = Scorer::new(&pack)?;
        let catalog = Catalog::new(self.catalog.ads.clone(), &pack.manifest.features)?;
        let side = scorer.ad_side(&catalog.ids, &catalog.weights)?;
        if pack.params.arch.dim != self.local_u.len() {
            self.local_u = vec![0.0; pack.params.arch.dim];
        }
        (self.pack, self.scorer, self.catalog, self.catalog_side) = (pack, scorer, catalog, side);
        Ok(())
    }

    /// The device-only user embedding (zeros until trained).
    pub fn local_u(&self) -> &[f32] {
        &self.local_u
    }

    /// Restores a stored local embedding. It must have the model's width and finite values;
    /// otherwise the current one stays and the error says why.
    pub fn set_local_u(&mut self, local_u: &[f32]) -> Result<()> {
        let dim = self.local_u.len();
        if local_u.len() != dim {
            return Err(HearthError::Shape { name: "local_u".into(), expected: vec![dim], found: vec![local_u.len()] });
        }
        if let Some(index) = local_u.iter().position(|v| !v.is_finite()) {
            return Err(HearthError::NonFinite { name: "local_u".into(), index });
        }
        self.local_u.copy_from_slice(local_u);
        Ok(())
    }

    /// Validates and installs a catalog, computing its ad side once.
    pub fn set_catalog(&mut self, ads: Vec<Ad>) -> Result<usize> {
        let catalog = Catalog::new(ads, self.spec())?;
        self.catalog_side = self.scorer.ad_side(&catalog.ids, &catalog.weights)?;
        self.catalog = catalog;
        Ok(self.catalog.len())
    }

    /// The model's request inputs for this profile and page at `now_ms`, with the names of
    /// the profile features in the user slots.
    pub fn request(&self, context: &Context, now_ms: i64) -> Result<(Request, Vec<String>)> {
        self.request_as(context, now_ms, true)
    }

    /// [`Engine::request`], or with `personalized` false the page context alone: empty user
    /// slots and a zero local embedding, as for a visitor with no profile.
    fn request_as(&self, context: &Context, now_ms: i64, personalized: bool) -> Result<(Request, Vec<String>)> {
        let spec = self.spec();
        let context = context.encode(spec)?;
        if !personalized {
            let user = Slots::encode(spec, spec.user_slots, &[]);
            return Ok((Request { user, local_u: vec![0.0; self.local_u.len()], context }, Vec::new()));
        }
        let (user, names) = self.profile.user_slots(spec, now_ms);
        Ok((Request { user, local_u: self.local_u.clone(), context }, names))
    }

    /// What this profile and page contribute to every ad's logit (see [`forward::logit`]).
    pub fn request_side(&self, context: &Context, now_ms: i64) -> Result<forward::RequestSide> {
        let (req, _) = self.request(context, now_ms)?;
        Ok(forward::request_side(&self.pack.params, &req))
    }

    /// Logits for the whole installed catalog, in catalog order.
    pub fn catalog_logits(&self, context: &Context, now_ms: i64) -> Result<Vec<f32>> {
        let (req, _) = self.request(context, now_ms)?;
        self.scorer.logits(&req, &self.catalog_side)
    }

    /// Ranks the installed catalog.
    pub fn rank(&self, context: &Context, opts: &RankOptions) -> Result<Vec<Ranked>> {
        self.rank_in(&self.catalog, &self.catalog_side, context, opts, None)
    }

    /// Ranks the installed catalog with logits computed elsewhere (the GPU scorer): one per
    /// catalog ad, in catalog order. Dismissals, caps, diversity and explanations are those of
    /// [`Engine::rank`]. Those logits carry the profile, so `personalized: false` is
    /// `InvalidRankOptions` here: rank such a request with [`Engine::rank`].
    pub fn rank_scored(&self, context: &Context, opts: &RankOptions, catalog_logits: &[f32]) -> Result<Vec<Ranked>> {
        if !opts.personalized {
            return Err(HearthError::InvalidRankOptions(
                "logits computed elsewhere carry the profile: rank a request that is not personalized with rank".into(),
            ));
        }
        if catalog_logits.len() != self.catalog.len() {
            return Err(HearthError::Shape {
                name: "catalog logits".into(),
                expected: vec![self.catalog.len()],
                found: vec![catalog_logits.len()],
            });
        }
        if let Some(index) = catalog_logits.iter().position(|v| !v.is_finite()) {
            return Err(HearthError::NonFiniteLogit { index });
        }
        self.rank_in(&self.catalog, &self.catalog_side, context, opts, Some(catalog_logits))
    }

    /// Ranks a one-off candidate list; its ad side is computed for this call only.
    pub fn rank_candidates(&self, ads: Vec<Ad>, context: &Context, opts: &RankOptions) -> Result<Vec<Ranked>> {
        let catalog = Catalog::new(ads, self.spec())?;
        let side = self.scorer.ad_side(&catalog.ids, &catalog.weights)?;
        self.rank_in(&catalog, &side, context, opts, None)
    }

    /// Ranks `catalog`, scoring its eligible ads with tract unless `precomputed` holds the
    /// logits of the whole catalog already.
    fn rank_in(
        &self,
        catalog: &Catalog,
        side: &[f32],
        context: &Context,
        opts: &RankOptions,
        precomputed: Option<&[f32]>,
    ) -> Result<Vec<Ranked>> {
        opts.validate()?;
        let (req, names) = self.request_as(context, opts.now_ms, opts.personalized)?;
        let width = self.scorer.width();
        let candidates = rank::eligible(&self.profile, &catalog.ads, opts);
        let all_eligible = candidates.len() == catalog.len();
        let scores: Cow<[f32]> = match precomputed {
            Some(all) if all_eligible => Cow::Borrowed(all),
            Some(all) => Cow::Owned(candidates.iter().map(|&(i, _)| all[i]).collect()),
            None => {
                let rows: Cow<[f32]> = if all_eligible {
                    Cow::Borrowed(side)
                } else {
                    Cow::Owned(candidates.iter().flat_map(|&(i, _)| &side[i * width..(i + 1) * width]).copied().collect())
                };
                Cow::Owned(self.scorer.logits(&req, &rows)?)
            }
        };
        // Diversity may reach past the top k, so it needs the full order.
        let keep = if opts.diversity.is_some() { None } else { Some(opts.k) };
        let mut order = rank::by_score(&candidates, &scores, &catalog.ads, keep);
        if let Some(rule) = &opts.diversity {
            order = rank::diversify(&order, |pos| &catalog.ads[candidates[pos].0], rule);
        }
        let p = &self.pack.params;
        // A ranking that asks for no explanation skips the request side and the shares.
        let explainer = (opts.explain > 0).then(|| Explainer::new(p, &req, names));
        Ok(order
            .into_iter()
            .take(opts.k)
            .map(|pos| {
                let (i, score) = (candidates[pos].0, scores[pos]);
                let row = &side[i * width..(i + 1) * width];
                Ranked {
                    ad_id: catalog.ads[i].id.clone(),
                    score,
                    probability: forward::sigmoid(score),
                    why: explainer.as_ref().map_or_else(Vec::new, |x| x.explain(p, row, opts.explain)),
                }
            })
            .collect())
    }
}
