// {{title}}: a Kiosk app in JavaScript (ComponentizeJS), made by `kiosk new`.
//
// An export returning `result<_, app-error>` refuses by throwing the app-error record
// ({code, message}); any other exception fails the call, and its message is in the
// installation's log and in the failed call's problem detail.
import { get, set, delete as remove, listKeys } from 'kiosk:app/key-value@0.2.0';
import { log } from 'kiosk:app/log@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Your service: manifest.json declares https://api.example.com in
// capabilities.outbound, with the apiKey secret bound to it.
const STATUS_URL = 'https://api.example.com/v1/status';
// How much of a response body `status` returns.
const MAX_BODY = 4096;

// Keeps the greeting and the apiKey. The apiKey arrives as the host's placeholder,
// {kiosk-secret:/apiKey}, never the tenant's key: keeping it keeps nothing secret.
function saveConfig(config) {
  const { greeting, apiKey } = JSON.parse(config);
  set('greeting', encoder.encode(greeting ?? 'Hello'));
  if (apiKey === undefined) {
    remove('apiKey');
  } else {
    set('apiKey', encoder.encode(apiKey));
  }
}

export const lifecycle = {
  install(ctx, config) {
    saveConfig(config);
  },
  validateConfig(ctx, config) {},
  configure(ctx, oldConfig, newConfig) {
    saveConfig(newConfig);
  },
  upgrade(ctx, fromVersion, config) {
    saveConfig(config);
  },
  uninstall(ctx) {},
};

export const calls = {
  // async (for fetch()): ComponentizeJS runs the event loop until the promise settles,
  // and a rejection with an app-error record is a refusal like a throw.
  async invoke(ctx, operation, input) {
    if (operation === 'greet') {
      return greet(input);
    }
    if (operation === 'status') {
      return status();
    }
    throw { code: 'unknown-operation', message: `no operation ${JSON.stringify(operation)}; this app has: greet, status` };
  },
};

function greet(input) {
  let name;
  try {
    name = JSON.parse(input).name;
  } catch (e) {
    throw { code: 'invalid-input', message: `input is not JSON: ${e.message}` };
  }
  if (typeof name !== 'string' || name.length < 1 || name.length > 100) {
    throw { code: 'invalid-input', message: 'name must be a string of 1-100 characters' };
  }
  const stored = get('greeting');
  const greeting = stored ? decoder.decode(stored) : 'Hello';
  // Counted at the next usage report, which clears it (each person once per report).
  set(`greeted/${name}`, encoder.encode('1'));
  log('info', `greeted ${name}`);
  return JSON.stringify({ message: `${greeting}, ${name}!` });
}

// Asks your service for its status with the tenant's key.
async function status() {
  const key = get('apiKey');
  if (!key) {
    throw { code: 'not-configured', message: 'set apiKey in the configuration first' };
  }
  let response, body;
  try {
    // `key` is the placeholder: Kiosk writes the tenant's key in its place on the way to
    // the destination the manifest binds /apiKey to (and nowhere else).
    response = await fetch(STATUS_URL, {
      headers: { authorization: `Bearer ${decoder.decode(key)}` },
      redirect: 'manual',
    });
    body = decoder.decode((await response.arrayBuffer()).slice(0, MAX_BODY));
  } catch (e) {
    throw { code: 'service-unreachable', message: String(e?.message ?? e) };
  }
  return JSON.stringify({ status: response.status, body });
}

export const usage = {
  report(ctx, window) {
    // The people greeted since the last report. Clearing them here is safe: a report's
    // key-value changes are kept only together with its usage (one commit).
    const greeted = listKeys('greeted/');
    for (const key of greeted) {
      remove(key);
    }
    if (greeted.length === 0) {
      return [];
    }
    return [{ sku: 'people-greeted', quantity: BigInt(greeted.length), idempotencyKey: `people/${window.startMs}` }];
  },
};
