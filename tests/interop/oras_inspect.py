"""Read an artifact back with the ORAS Python SDK and print its manifest and the
files it pulled, as JSON. Usage: oras_inspect.py <registry host> <repository:tag> <outdir>"""
import json
import os
import sys

import oras.client

host, target, outdir = sys.argv[1], sys.argv[2], sys.argv[3]
client = oras.client.OrasClient(hostname=host, insecure=True)
manifest = client.get_manifest(f"{host}/{target}")
files = client.pull(target=f"{host}/{target}", outdir=outdir)
print(json.dumps({"manifest": manifest, "files": sorted(os.path.basename(f) for f in files)}))
