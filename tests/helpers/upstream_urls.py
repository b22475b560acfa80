"""Upstream URLs and what each side says of them: the operator's own check (tests/unit) and the
CRD's rules on a real API server (tests/chart) run the same table, so they cannot drift apart."""

# Kinds of refusal; each side words its own message.
SELF_LOOP = "self-loop"
BAD_URL = "malformed"

REFUSED = [
    ("http://LOCALHOST:8000", SELF_LOOP),
    ("http://[::1]:8000", SELF_LOOP),
    ("http://127.0.0.1:008000", BAD_URL),
    ("http://user:pw@localhost:9464", BAD_URL),
    ("https://127.0.0.1:8000", SELF_LOOP),
    ("http://127.0.0.1:8000#frag", BAD_URL),
    ("http://127.0.0.1:8000?x=1", BAD_URL),
    ("http://127.0.0.1:99999", BAD_URL),
    ("http://127.0.0.1:-1", BAD_URL),
    ("http://0.0.0.0:9464", SELF_LOOP),
    ("http://127.0.0.2:8000", SELF_LOOP),
    ("http://localhost.:8000", SELF_LOOP),
    ("http://127.1:8000", BAD_URL),
    ("http://[::ffff:127.0.0.1]:8000", SELF_LOOP),
    ("http://[0:0:0:0:0:0:0:1]:8000", SELF_LOOP),
    ("http://[::ffff:7f00:1]:9464", SELF_LOOP),
    ("http://[::]:8000", SELF_LOOP),
    ("http://a b", BAD_URL),
    ("http://127.0.0.1:", BAD_URL),
    ("http://127.0.0.1:0", BAD_URL),
    ("ftp://tei:21", BAD_URL),
    ("http://tei:8000\n", BAD_URL),
]
ACCEPTED = [
    "http://127.0.0.1:80",
    "http://localhost:3000/",
    "https://tei.default.svc.cluster.local.:8443/v1",
    "http://[fd00::1]:8000",
    "http://10.0.0.8:8000",
    "http://[::1]:8080",
]
