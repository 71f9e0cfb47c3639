// A kiosk:app@0.2.0 test guest in JavaScript (ComponentizeJS): calls out with the
// standard fetch(), as an app would (its partner's API, the tenant's key as the
// placeholder the host fills in) and as an attacker would (internal addresses,
// undeclared hosts). Never shipped. Built by build.sh into
// target/wasm32-wasip2/release/outbound_js_guest.wasm.
//
// invoke `fetch {url, method?, headers?: [[name, value]], body?}` →
// `{status, bytes, body}` or `{error}`; `config` → the configuration install received.
import { get, set } from 'kiosk:app/key-value@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const lifecycle = {
  install(_ctx, config) {
    set('config', encoder.encode(config));
  },
  validateConfig(_ctx, _config) {},
  configure(_ctx, _old, config) {
    set('config', encoder.encode(config));
  },
  upgrade(_ctx, _from, _config) {},
  uninstall(_ctx) {},
};

async function fetchOnce(input) {
  try {
    const response = await fetch(input.url, {
      method: input.method ?? 'GET',
      headers: input.headers ?? [],
      body: input.body,
      redirect: 'manual',
    });
    const text = await response.text();
    return { status: response.status, bytes: text.length, body: text.slice(0, 65536) };
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

export const calls = {
  async invoke(_ctx, operation, input) {
    const args = JSON.parse(input);
    if (operation === 'fetch') return JSON.stringify(await fetchOnce(args));
    if (operation === 'config') {
      const stored = get('config');
      return stored ? decoder.decode(stored) : 'null';
    }
    throw { code: 'unknown-operation', message: `no operation ${operation}` };
  },
};

export const usage = {
  report(_ctx, _window) {
    return [];
  },
};
