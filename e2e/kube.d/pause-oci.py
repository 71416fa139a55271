#!/usr/bin/env python3
"""e2e/kube.d/pause-oci.py BINARY NAME OUTPUT

Pack a static init (Debian's catatonit) as the node's pod sandbox ("pause") image: an OCI archive with one
layer holding BINARY as /pause, entrypoint ["/pause", "-P"] (catatonit's pause mode), named NAME through the
io.containerd.image.name annotation so `ctr -n k8s.io images import OUTPUT` makes it NAME. Nothing is pulled:
containerd's CRI plugin is pinned to NAME (pinned_images.sandbox). Reproducible (fixed mtimes and owners).
"""
import gzip
import hashlib
import io
import json
import sys
import tarfile


def blob(files, data, media):
    d = hashlib.sha256(data).hexdigest()
    files[f"blobs/sha256/{d}"] = data
    return {"mediaType": media, "digest": f"sha256:{d}", "size": len(data)}


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    binary, name, output = sys.argv[1:]
    with open(binary, "rb") as f:
        exe = f.read()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("pause")
        ti.size, ti.mode, ti.mtime = len(exe), 0o755, 0
        t.addfile(ti, io.BytesIO(exe))
    layer_raw = raw.getvalue()
    layer_gz = gzip.compress(layer_raw, mtime=0)
    files = {}
    layer = blob(files, layer_gz, "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/pause", "-P"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_raw).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"e2e/kube.d/pause-oci.py {binary}"}],
    }
    cfg = blob(files, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg, "layers": [layer]}
    man = blob(files, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    man["platform"] = {"architecture": "amd64", "os": "linux"}
    man["annotations"] = {"io.containerd.image.name": name,
                          "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                      "manifests": [man]}, sort_keys=True).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    with tarfile.open(output, "w", format=tarfile.PAX_FORMAT) as t:
        for path in ["oci-layout", "index.json"] + sorted(p for p in files if p.startswith("blobs/")):
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(files[path]), 0o644, 0
            t.addfile(ti, io.BytesIO(files[path]))


if __name__ == "__main__":
    main()
