"""A real SMTP server for procespy's tests, on aiosmtpd.

Every message it accepts is parsed with Python's email package and written
to DIR/NNNN.json (via a temporary file and a rename): envelope, headers,
the decoded text body, whether the session used TLS and who authenticated.
With --refuse TEXT, a message whose subject contains TEXT is refused for
good (554) and recorded as DIR/NNNN.refused instead. Prints "ready" once it
listens; stops on SIGTERM or when stdin closes.

usage: smtp_server.py --port PORT --dir DIR [--security none|starttls|tls]
                      [--cert PEM --key PEM] [--auth USER:PASSWORD]
                      [--refuse TEXT]
"""

import argparse
import email
import email.policy
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    # Quiet: the tests read the messages, not the server's chatter.
    warnings.filterwarnings("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--security", choices=["none", "starttls", "tls"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth")
    parser.add_argument("--refuse")
    args = parser.parse_args()
    counter = itertools.count(1)
    image_counter = itertools.count(1)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            raw = envelope.original_content or envelope.content
            if isinstance(raw, str):
                raw = raw.encode()
            message = email.message_from_bytes(raw, policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            html = message.get_body(preferencelist=("html",))
            images = []
            for part in message.walk():
                if part.get_content_maintype() != "image":
                    continue
                image = os.path.join(args.dir, f"image-{next(image_counter):04}.bin")
                with open(image, "wb") as out:
                    out.write(part.get_payload(decode=True) or b"")
                images.append(
                    {
                        "content_type": part.get_content_type(),
                        "content_id": str(part["content-id"]),
                        "disposition": part.get_content_disposition(),
                        "path": image,
                    }
                )
            login = None
            if isinstance(session.auth_data, LoginPassword):
                login = session.auth_data.login.decode()
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "subject": str(message["subject"]),
                "from": str(message["from"]),
                "to": str(message["to"]),
                "date": str(message["date"]),
                "message_id": str(message["message-id"]),
                "content_type": message.get_content_type(),
                "body": body.get_content() if body is not None else "",
                "html": html.get_content() if html is not None else "",
                "images": images,
                # session.ssl is set by STARTTLS; implicit TLS shows on the transport.
                "tls": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                "login": login,
                "received": time.time(),
            }
            n = next(counter)
            if args.refuse is not None and args.refuse in record["subject"]:
                with open(os.path.join(args.dir, f"{n:04}.refused"), "w") as out:
                    json.dump(record, out, indent=1)
                return "554 5.7.1 refused by the test server"
            path = os.path.join(args.dir, f"{n:04}.json")
            with open(path + ".tmp", "w") as out:
                json.dump(record, out, indent=1)
            os.rename(path + ".tmp", path)
            return "250 OK: queued"

    def authenticator(server, session, envelope, mechanism, auth_data):
        user, _, password = args.auth.partition(":")
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    kwargs = {}
    context = None
    if args.security != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    if args.security == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif args.security == "tls":
        kwargs.update(ssl_context=context)
    if args.auth:
        # With implicit TLS the whole session is encrypted; aiosmtpd only
        # counts STARTTLS as TLS for auth_require_tls.
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=args.security == "starttls",
        )
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=args.port, server_hostname="smtp.test", **kwargs
    )
    controller.start()
    print("ready", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
