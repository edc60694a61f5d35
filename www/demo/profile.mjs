// "Your ad profile": what Hearth keeps, from window.hearth (the snippet), with erase, opt-out
// and export. Text only, through textContent.
const $ = (id) => document.getElementById(id);
const row = (...cells) => {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(Object.assign(document.createElement('td'), { textContent: c }));
  return tr;
};

// The privacy ledger in words. "ε" is the differential-privacy measure: the smaller, the less
// any one browser's data can change what a server sees.
const epsilon = (e) => (Number.isFinite(e) ? `ε ${e.toFixed(2)}` : 'not protected by this browser’s own noise (∞)');
function privacyText(p) {
  if (p.unreadable) {
    return 'Hearth could not read this browser’s record of privacy spent, so it treats the budget as spent: ' +
      'this browser helps train no more model updates.';
  }
  if (p.rounds === 0) return `Your browser has not helped train the model yet. Its privacy budget is ε ${p.epsilon_budget}.`;
  const updates = p.rounds === 1 ? '1 model update' : `${p.rounds} model updates`;
  return `Your browser has helped train ${updates}. ` +
    `Privacy spent: ${epsilon(p.curious_server_epsilon)} of ${p.epsilon_budget} against one curious server (or a fake-client attack). ` +
    `If both servers colluded: ${epsilon(p.collusion_epsilon)}.` +
    (p.may_join ? '' : ' The budget is spent: this browser helps train no more updates.');
}

async function show() {
  const [profile, status, privacy] = await Promise.all([hearth.profile(), hearth.status(), hearth.privacy()]);
  $('privacy').textContent = privacyText(privacy);
  const learning = status.gpc ? 'off (Global Privacy Control is set)' : status.optedOut ? 'off (you opted out)' : 'on';
  $('status').textContent =
    `Learning ${learning} · model version ${status.modelVersion} · ${status.ads} ads · ranking on ${status.webgpu ? `WebGPU (${status.webgpu})` : 'the CPU'}`;
  $('opt').textContent = status.optedOut ? 'Opt back in' : 'Opt out';
  $('half-life').textContent = String(Math.round(profile.config.half_life_ms / 86_400_000));
  $('weights').tBodies[0].replaceChildren(...profile.weights.slice(0, 30).map((w) => row(w.feature, w.weight.toFixed(3))));
  const learned = profile.localEmbedding;
  const size = Math.hypot(...learned);
  $('local').textContent = size === 0
    ? 'Nothing yet: when Hearth next trains in this browser, it learns from the ads you clicked among those it showed.'
    : `${learned.length} numbers that move ads you respond to up and others down (size ${size.toFixed(3)}); ` +
      'learned in this browser and kept with your profile, never sent.';
  $('count').textContent = String(profile.events.length);
  const about = (e) => e.ad_id ?? [...(e.topics ?? []), ...(e.keywords ?? [])].join(', ');
  $('events').tBodies[0].replaceChildren(
    ...profile.events.slice(-50).reverse().map((e) => row(new Date(e.ts).toLocaleString(), e.kind, about(e))),
  );
  document.body.dataset.ready = 'true';
}

async function main() {
  while (!window.hearth) await new Promise((r) => setTimeout(r, 20)); // the snippet is async
  await hearth.ready;
  $('erase').onclick = () => hearth.erase().then(show);
  $('opt').onclick = async () => {
    const { optedOut } = await hearth.status();
    await (optedOut ? hearth.optIn() : hearth.optOut());
    await show();
  };
  $('export').onclick = async () => {
    const blob = new Blob([await hearth.exportProfile()], { type: 'application/json' });
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: 'hearth-profile.json' });
    a.click();
    URL.revokeObjectURL(a.href);
  };
  await show();
}

main().catch((e) => {
  $('status').textContent = `Hearth could not start: ${e.message}`;
});
