#!/usr/bin/env python3
"""Writes crates/apimachinery/src/protobuf/schema.json: the Kubernetes protobuf messages
(field tags, JSON names, types) that the API server needs to decode the protobuf bodies
kubectl 1.32+ sends. Read from the k8s-pb crate's generated sources (run `cargo fetch` first);
JSON names are the field names in lowerCamelCase with Kubernetes' acronyms (clusterIP,
podCIDRs, targetCPUUtilizationPercentage).

usage: tools/gen_protobuf_schema.py [path to k8s-pb-X.Y.Z]
"""
import glob
import json
import os
import re
import sys

ACRONYMS = {"ip": "IP", "ips": "IPs", "cidr": "CIDR", "cidrs": "CIDRs", "cpu": "CPU",
            "id": "ID", "uuid": "UUID", "pid": "PID", "ipc": "IPC", "wwns": "WWNs",
            "url": "URL", "tls": "TLS", "uid": "UID", "api": "API", "dns": "DNS"}
# Fields whose Kubernetes JSON name does not follow the rule above.
EXCEPTIONS = {"se_linux_options": "seLinuxOptions", "se_linux_change_policy": "seLinuxChangePolicy",
              "fs_group": "fsGroup", "iscsi": "iscsi", "i_s_c_s_i": "iscsi",
              "api_version": "apiVersion", "uid": "uid", "external_ips": "externalIPs",
              "ca_bundle": "caBundle", "dns_policy": "dnsPolicy", "dns_config": "dnsConfig",
              "api_group": "apiGroup", "api_groups": "apiGroups", "ip_family": "ipFamily",
              "ip_families": "ipFamilies", "ip_family_policy": "ipFamilyPolicy",
              "ip_block": "ipBlock", "ip_mode": "ipMode", "raw": "Raw"}


def json_name(ident):
    ident = ident.removeprefix("r#")
    if ident in EXCEPTIONS:
        return EXCEPTIONS[ident]
    words = ident.split("_")
    out = words[0]
    for w in words[1:]:
        out += ACRONYMS.get(w, w[:1].upper() + w[1:])
    return out


def resolve(module, rust_type):
    """The message a Rust type path names, as a dotted module path."""
    path = rust_type.strip().rstrip(",")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        while path.startswith(wrapper):
            path = path[len(wrapper):-1].strip().rstrip(",")
    parts = module.split(".")
    segs = path.split("::")
    while segs and segs[0] == "super":
        parts = parts[:-1]
        segs = segs[1:]
    return ".".join(parts + segs)


# A field: its prost attribute, name and (possibly multi-line) type, up to the next field's
# doc comment or attribute, or the end of the struct.
FIELD = re.compile(r'#\[prost\(([^\]]*)\)\]\s*pub\s+([a-z0-9_#]+):\s*(.*?),\s*(?=///|#\[|\}|$)', re.S)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/k8s-pb-*")))[-1]
    messages = {}
    for path in glob.glob(os.path.join(root, "src", "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), os.path.join(root, "src")).replace(os.sep, ".")
        text = open(path).read()
        for m in re.finditer(r'pub struct (\w+) \{(\}|.*?\n\})', text, re.S):
            name, body = m.group(1), m.group(2)
            fields = []
            for f in FIELD.finditer(body):
                attrs, ident, rust_type = f.group(1), f.group(2), f.group(3)
                tag = int(re.search(r'tag = "(\d+)"', attrs).group(1))
                kind = re.match(r"\s*(\w+)", attrs).group(1)
                repeated = "repeated" in attrs
                mp = re.search(r'map = "string, (\w+)"', attrs)
                if mp:
                    if mp.group(1) == "message":
                        value_type = re.sub(r"\s+", "", rust_type).rstrip(",>").rsplit(",", 1)[1]
                        t = "map:message:" + resolve(module, value_type)
                    else:
                        t = "map:" + mp.group(1)
                elif kind == "message":
                    t = "message:" + resolve(module, re.sub(r"\s+", "", rust_type))
                else:
                    t = kind
                fields.append([tag, json_name(ident), t, repeated])
            messages[module + "." + name] = fields
    out = os.path.join(os.path.dirname(__file__), "..", "crates", "apimachinery", "src",
                       "protobuf", "schema.json")
    with open(out, "w") as f:
        json.dump({"source": os.path.basename(root), "messages": messages}, f,
                  separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"{len(messages)} messages from {root} -> {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
