// @ts-check
// Tabs of one device share the stored profile, local embedding and settings; `profileRev`
// counts writes of the first two. A tab whose copy is behind reloads it before it uses it, and
// every change happens under a lock on the latest copy and is written back before the lock is
// released, so no tab overwrites another's events or training.
/** @import { Records } from './store.js' */
/** @import { State } from './state.js' */

/**
 * Neither learning nor uploads with Global Privacy Control or after an opt-out.
 * @param {State} state
 */
export const blocked = ({ config, settings }) => config.gpc || settings.optedOut;

/** @param {State} state */
export async function sync(state) {
  const { store, h } = state;
  state.settings = (await store.get('settings')) ?? state.settings;
  const rev = (await store.get('profileRev')) ?? 0;
  if (rev === state.profileRev) return;
  h.loadProfile((await store.get('profile')) ?? null);
  await restoreLocalEmbedding(state);
  state.profileRev = rev;
}

/**
 * The embedding local training fitted (what the device learned from its clicks), as stored; one
 * the model cannot take (another width after a model change) is dropped and training refits it.
 * @param {Pick<State, 'store' | 'warn' | 'h'>} state
 */
export async function restoreLocalEmbedding({ store, warn, h }) {
  const stored = await store.get('localU');
  if (!stored) return;
  try {
    h.setLocalEmbedding(stored);
  } catch (e) {
    warn(`stored local embedding dropped: ${e.message}`);
    await store.delete('localU');
  }
}

/**
 * Runs `change` on the latest profile and stores the result, with `extra` records (or the records
 * `extra` makes of the change's result), in one write.
 * @template T
 * @param {State} state
 * @param {() => T} change
 * @param {Partial<Records> | ((result: T) => Partial<Records>)} [extra]
 */
export async function changeProfile(state, change, extra = {}) {
  return navigator.locks.request('hearth-profile', async () => {
    await sync(state);
    const { h, store } = state;
    const result = change();
    const records = typeof extra === 'function' ? extra(result) : extra;
    await store.put({ profile: h.exportProfile(), localU: h.localEmbedding(), profileRev: state.profileRev + 1, ...records });
    state.profileRev += 1;
    return result;
  });
}
