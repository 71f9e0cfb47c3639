// Ad Copy Check: a Kiosk app in JavaScript (ComponentizeJS).
//
// Build: `bash build.sh` (writes ../../target/wasm32-wasip2/release/ad_copy_check.wasm).
// Try:   kiosk run ../../target/wasm32-wasip2/release/ad_copy_check.wasm --manifest manifest.json \
//          --tenant demo --config '{"bannedWords": ["free"]}' --invoke check \
//          --input '{"headline": "Free shoes today", "body": "Running shoes for every road."}'
//
// An export returning `result<_, app-error>` refuses by throwing the app-error record;
// any other exception fails the call, and its message and stack are in the
// installation's log and in the failed call's problem detail.
import { recordUsage } from 'kiosk:app/metering@0.1.0';
import { get, set, listKeys } from 'kiosk:app/key-value@0.1.0';
import { log } from 'kiosk:app/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function refuse(code, message) {
  return { code, message };
}

function parseJson(text, code, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw refuse(code, `${what} is not JSON: ${e.message}`);
  }
}

function saveRules(config) {
  const words = (config.bannedWords ?? []).map((w) => w.toLowerCase());
  set('rules', encoder.encode(JSON.stringify({ maxHeadline: config.maxHeadline ?? 30, words })));
}

function rules() {
  const stored = get('rules');
  return stored ? JSON.parse(decoder.decode(stored)) : { maxHeadline: 30, words: [] };
}

export const lifecycle = {
  validateConfig(ctx, config) {
    const parsed = parseJson(config, 'invalid-config', 'configuration');
    const words = parsed.bannedWords ?? [];
    if (new Set(words.map((w) => w.toLowerCase())).size !== words.length) {
      throw refuse('invalid-config', 'bannedWords lists a word twice');
    }
  },
  install(ctx, config) {
    saveRules(parseJson(config, 'invalid-config', 'configuration'));
    log('info', `installed for tenant ${ctx.tenantId}`);
  },
  configure(ctx, oldConfig, newConfig) {
    saveRules(parseJson(newConfig, 'invalid-config', 'configuration'));
    log('info', 'rules updated');
  },
  upgrade(ctx, fromVersion, config) {
    saveRules(parseJson(config, 'invalid-config', 'configuration'));
    log('info', `upgraded from ${fromVersion}`);
  },
  uninstall(ctx) {
    log('info', 'uninstalled');
  },
};

export const calls = {
  invoke(ctx, operation, input) {
    if (operation !== 'check') {
      throw refuse('unknown-operation', `no operation ${JSON.stringify(operation)}; this app has: check`);
    }
    const ad = parseJson(input, 'invalid-input', 'input');
    if (typeof ad.headline !== 'string' || typeof (ad.body ?? '') !== 'string') {
      throw refuse('invalid-input', 'headline (and body, if given) must be strings');
    }
    const body = ad.body ?? '';
    const { maxHeadline, words } = rules();
    const problems = [];
    if ([...ad.headline].length > maxHeadline) {
      problems.push(`headline is ${[...ad.headline].length} characters, the limit is ${maxHeadline}`);
    }
    const text = `${ad.headline} ${body}`.toLowerCase();
    for (const word of words) {
      if (text.split(/[\s.,;:!?'"()\[\]{}\/-]+/).includes(word)) {
        problems.push(`contains banned word "${word}"`);
      }
    }
    const characters = [...ad.headline].length + [...body].length;
    if (characters > 0) {
      recordUsage('characters-scanned', BigInt(characters));
    }
    log('info', `checked ${characters} characters: ${problems.length} problem(s)`);
    return JSON.stringify({ ok: problems.length === 0, problems });
  },
};

export const usage = {
  report(ctx, window) {
    const { words } = rules();
    if (words.length === 0) {
      return [];
    }
    return [{ sku: 'rules-active', quantity: BigInt(words.length), idempotencyKey: `rules/${window.startMs}` }];
  },
};
