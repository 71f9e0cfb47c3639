// {{title}}: a Kiosk app in JavaScript (ComponentizeJS), made by `kiosk new`.
//
// An export returning `result<_, app-error>` refuses by throwing the app-error record
// ({code, message}); any other exception fails the call, and its message is in the
// installation's log and in the failed call's problem detail.
import { get, set, delete as remove, listKeys } from 'kiosk:app/key-value@0.1.0';
import { log } from 'kiosk:app/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function saveGreeting(config) {
  set('greeting', encoder.encode(JSON.parse(config).greeting ?? 'Hello'));
}

export const lifecycle = {
  install(ctx, config) {
    saveGreeting(config);
  },
  validateConfig(ctx, config) {},
  configure(ctx, oldConfig, newConfig) {
    saveGreeting(newConfig);
  },
  upgrade(ctx, fromVersion, config) {
    saveGreeting(config);
  },
  uninstall(ctx) {},
};

export const calls = {
  invoke(ctx, operation, input) {
    if (operation !== 'greet') {
      throw { code: 'unknown-operation', message: `no operation ${JSON.stringify(operation)}; this app has: greet` };
    }
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
  },
};

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
