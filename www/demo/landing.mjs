// The demo's stand-in for an advertiser's landing page: shows which ad brought the
// visitor here (?ad=<id>) and, when the catalog has it, the ad's title.
const id = new URLSearchParams(location.search).get('ad');
document.getElementById('ad-id').textContent = id ?? '(none)';

if (id) {
  try {
    const res = await fetch('./catalog.json');
    if (res.ok) {
      const { ads, creatives } = await res.json();
      const ad = ads.find((a) => a.id === id);
      const creative = creatives[id];
      if (ad && creative) {
        document.getElementById('ad-title').textContent = `“${creative.title}” — ${ad.advertiser}, ${ad.category}`;
      }
    }
  } catch {
    // The id alone is enough.
  }
}
