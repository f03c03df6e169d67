"""TLS clients for tests/tls.rs: HTTPS with requests, DICOM C-ECHO with pynetdicom over an
ssl.SSLContext (PS3.15 B.1). Prints one JSON object.

    tls_client.py get URL --ca CA.pem [--token TOKEN] [--accept TYPE] [--out FILE]
    tls_client.py login URL --ca CA.pem --token TOKEN      (POST /login; the cookie's attributes)
    tls_client.py echo HOST PORT --ca CA.pem [--cert C.pem --key K.pem] [--aet TITLE]
"""

import argparse
import json
import ssl
import sys


def get(args):
    import requests

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    if args.accept:
        headers["Accept"] = args.accept
    try:
        r = requests.get(args.url, verify=args.ca, headers=headers, timeout=30)
    except requests.exceptions.RequestException as e:
        return {"ok": False, "error": type(e).__name__ + ": " + str(e)}
    if args.out:
        with open(args.out, "wb") as f:
            f.write(r.content)
    return {"ok": True, "status": r.status_code, "length": len(r.content)}


def login(args):
    import requests

    try:
        r = requests.post(
            args.url,
            data={"token": args.token},
            verify=args.ca,
            allow_redirects=False,
            timeout=30,
        )
    except requests.exceptions.RequestException as e:
        return {"ok": False, "error": type(e).__name__ + ": " + str(e)}
    cookie = r.headers.get("Set-Cookie", "")
    # The cookie's attributes only: its value is the token.
    return {"ok": True, "status": r.status_code, "attributes": cookie.split(";")[1:]}


def echo(args):
    from pynetdicom import AE

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 30
    ae.network_timeout = 30
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        args.host, args.port, ae_title="TRAMY", tls_args=(context, "localhost")
    )
    if not assoc.is_established:
        return {"ok": False, "error": "association not established"}
    status = assoc.send_c_echo()
    assoc.release()
    return {"ok": True, "status": int(status.Status) if status else None}


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("--ca", required=True)
    g.add_argument("--token")
    g.add_argument("--accept")
    g.add_argument("--out")
    p = sub.add_parser("login")
    p.add_argument("url")
    p.add_argument("--ca", required=True)
    p.add_argument("--token", required=True)
    e = sub.add_parser("echo")
    e.add_argument("host")
    e.add_argument("port", type=int)
    e.add_argument("--ca", required=True)
    e.add_argument("--cert")
    e.add_argument("--key")
    e.add_argument("--aet", default="TLSTEST")
    args = parser.parse_args()
    result = {"get": get, "login": login, "echo": echo}[args.command](args)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
