"""A minimal OpenID Connect provider on loopback, for the console's browser test: discovery,
JWKS, an authorization endpoint that signs in whoever `subject` names at once (a person already
logged in at the provider) and redirects back with a code, and a token endpoint that redeems the
code (checking its PKCE verifier and client) for an RS256 ID token carrying the nonce.

It is independent of the service: its own key (cryptography), its own JWT library (PyJWT).
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class LocalProvider:
    def __init__(self, subject):
        self.subject = subject
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self.codes = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()

    def _jwks(self):
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    base = provider.url
                    self._json(200, {"issuer": base, "jwks_uri": f"{base}/jwks", "authorization_endpoint": f"{base}/authorize",
                                     "token_endpoint": f"{base}/token", "response_types_supported": ["code"],
                                     "code_challenge_methods_supported": ["S256"]})
                elif url.path == "/jwks":
                    self._json(200, provider._jwks())
                elif url.path == "/authorize":
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = (query["nonce"], query["code_challenge"], query["client_id"], query["redirect_uri"])
                    back = f"{query['redirect_uri']}?" + urllib.parse.urlencode({"code": code, "state": query["state"]})
                    self.send_response(302)
                    self.send_header("location", back)
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                issued = provider.codes.pop(form.get("code", ""), None)
                challenge = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest()).rstrip(b"=").decode()
                if self.path != "/token" or issued is None or issued[1] != challenge or issued[2] != form.get("client_id") \
                        or issued[3] != form.get("redirect_uri"):
                    self._json(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                claims = {"iss": provider.url, "aud": issued[2], "sub": provider.subject, "nonce": issued[0], "iat": now, "exp": now + 300}
                token = jwt.encode(claims, provider.key, algorithm="RS256", headers={"kid": provider.kid})
                self._json(200, {"id_token": token, "token_type": "Bearer"})

        return Handler
