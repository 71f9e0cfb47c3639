// Ad Copy Check: a Kiosk app in JavaScript (ComponentizeJS), built against
// kiosk:app@0.2.0.
//
// Build: `bash build.sh` (writes ../../target/wasm32-wasip2/release/ad_copy_check.wasm).
// Try:   kiosk run ../../target/wasm32-wasip2/release/ad_copy_check.wasm --manifest manifest.json \
//          --tenant demo --config '{"bannedWords": ["free"]}' --invoke check \
//          --input '{"headline": "Free shoes today", "body": "Running shoes for every road."}'
//
// `check` applies the tenant's rules (headline length, banned words) and, if the tenant
// turns `brandCheck` on, also asks the partner's brand-safety API with the standard
// fetch(): the app world 0.2.0 imports wasi:http/outgoing-handler, and the manifest
// declares https://brand.acme.example in `capabilities.outbound` with the tenant's
// `brandApiKey` bound to it. The app never holds that key: configuration values the
// schema marks `writeOnly` reach it as a placeholder, `{kiosk-secret:/brandApiKey}`,
// which it stores as received and puts in the request's `authorization` header; the
// host writes the real key into the request it sends, only to that destination. With
// `brandCheck` off (the default) the app makes no request at all.
//
// An export returning `result<_, app-error>` refuses by throwing the app-error record;
// any other exception fails the call, and its message and stack are in the
// installation's log and in the failed call's problem detail. `invoke` is async (it
// awaits fetch()): ComponentizeJS runs the event loop until its promise settles, and a
// rejection with an app-error record is a refusal like a throw.
import { recordUsage } from 'kiosk:app/metering@0.2.0';
import { get, set, listKeys } from 'kiosk:app/key-value@0.2.0';
import { log } from 'kiosk:app/log@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// The partner's brand-safety API (declared in manifest.json's `capabilities.outbound`).
const BRAND_API = 'https://brand.acme.example/v1/check';
// Most flagged terms of one answer the app turns into findings.
const MAX_FLAGGED = 100;

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

function errorMessage(e) {
  return e && typeof e.message === 'string' ? e.message : String(e);
}

// The brand check's settings, or null when the tenant has not turned it on. The key is
// kept as received: the placeholder, never the tenant's secret.
function brandSettings(config) {
  if (config.brandCheck !== true) {
    return null;
  }
  if (typeof config.brandApiKey !== 'string' || config.brandApiKey === '') {
    throw refuse('invalid-config', 'brandCheck is on but brandApiKey is not set: the brand-safety API needs your key');
  }
  return { locale: config.locale ?? 'en', apiKey: config.brandApiKey };
}

function saveRules(config) {
  const words = (config.bannedWords ?? []).map((w) => w.toLowerCase());
  const rules = { maxHeadline: config.maxHeadline ?? 30, words };
  const brand = brandSettings(config);
  if (brand) {
    rules.brand = brand;
  }
  set('rules', encoder.encode(JSON.stringify(rules)));
}

function rules() {
  const stored = get('rules');
  return stored ? JSON.parse(decoder.decode(stored)) : { maxHeadline: 30, words: [] };
}

// Asks the brand-safety API about one ad; returns the terms it flagged (at most
// MAX_FLAGGED). Any failure refuses the call with `brand-api`. Headers are never logged.
async function brandSafety(brand, headline, body) {
  let response;
  try {
    response = await fetch(BRAND_API, {
      method: 'POST',
      headers: { authorization: `Bearer ${brand.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ locale: brand.locale, text: `${headline}\n${body}` }),
      redirect: 'manual',
    });
  } catch (e) {
    throw refuse('brand-api', `the brand-safety API could not be reached: ${errorMessage(e)}`);
  }
  if (response.status !== 200) {
    throw refuse('brand-api', `the brand-safety API answered ${response.status}`);
  }
  let text;
  try {
    text = await response.text();
  } catch (e) {
    throw refuse('brand-api', `the brand-safety API's answer could not be read: ${errorMessage(e)}`);
  }
  let answer;
  try {
    answer = JSON.parse(text);
  } catch (e) {
    throw refuse('brand-api', `the brand-safety API's answer is not JSON: ${e.message}`);
  }
  const flagged = answer !== null && typeof answer === 'object' ? answer.flagged : undefined;
  if (!Array.isArray(flagged) || !flagged.every((term) => typeof term === 'string')) {
    throw refuse('brand-api', 'the brand-safety API\'s answer is not {"flagged": [strings]}');
  }
  return flagged.slice(0, MAX_FLAGGED);
}

export const lifecycle = {
  validateConfig(ctx, config) {
    const parsed = parseJson(config, 'invalid-config', 'configuration');
    const words = parsed.bannedWords ?? [];
    if (new Set(words.map((w) => w.toLowerCase())).size !== words.length) {
      throw refuse('invalid-config', 'bannedWords lists a word twice');
    }
    brandSettings(parsed);
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
  async invoke(ctx, operation, input) {
    if (operation !== 'check') {
      throw refuse('unknown-operation', `no operation ${JSON.stringify(operation)}; this app has: check`);
    }
    const ad = parseJson(input, 'invalid-input', 'input');
    if (typeof ad.headline !== 'string' || typeof (ad.body ?? '') !== 'string') {
      throw refuse('invalid-input', 'headline (and body, if given) must be strings');
    }
    const body = ad.body ?? '';
    const { maxHeadline, words, brand } = rules();
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
    if (brand) {
      for (const term of await brandSafety(brand, ad.headline, body)) {
        problems.push(`brand-safety: flagged ${JSON.stringify(term)}`);
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
