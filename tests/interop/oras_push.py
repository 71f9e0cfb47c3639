"""Push a Kiosk app artifact with the ORAS Python SDK, the way a partner without Kiosk
would (SPEC §2): config = manifest.json, layers = app.wasm and gpg signatures.
Usage: oras_push.py <registry host> <repository:tag>   (run in the files' directory)"""
import sys

import oras.client

host, target = sys.argv[1], sys.argv[2]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.push(
    target=f"{host}/{target}",
    manifest_config="manifest.json:application/vnd.alli-marketplace.manifest.v1+json",
    files=[
        "app.wasm:application/wasm",
        "manifest.json.asc:application/pgp-signature",
        "app.wasm.asc:application/pgp-signature",
    ],
    quiet=True,
)
