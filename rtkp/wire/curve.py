"""CURVE for every rtkp socket: key files, the server side (the stream's XPUB, the control ROUTER) and the client
side (a Subscriber, a ControlClient). docs/PROTOCOL.md, "Transport", has what a user does with the keys.

Keys are ZeroMQ certificate files written by `rtkp keys`: NAME.key (public, give it away) and NAME.key_secret (keep
it). A server admits only clients whose public key file lies in its allowed-clients folder (`--curve-clients DIR`).
"""

from __future__ import annotations

from pathlib import Path

from rtkp.errors import ConfigError


def load_key(path: str | Path, secret: bool, flag: str | None = None) -> bytes:
    """A Z85 CURVE key from a file written by `rtkp keys` (ZeroMQ certificate format); ConfigError in one line (naming
    `flag`, the argument that gave the path, when given) for a file that is missing, a folder, or not a key file."""
    import zmq.auth

    what = f"{flag} {path}" if flag else str(path)
    kind = "a .key_secret file" if secret else "a .key file"
    if Path(path).is_dir():
        raise ConfigError(f"{what}: is a folder; give {kind} written by `rtkp keys`")
    if not Path(path).exists():
        raise ConfigError(f"{what}: not found; give {kind} written by `rtkp keys`")
    try:
        public, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: not {kind} written by `rtkp keys` ({exc})") from None
    if secret and secret_key is None:
        raise ConfigError(f"{what}: holds no secret key (use the .key_secret file)")
    return secret_key if secret else public


def write_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write a CURVE key pair: <name>.key (public, give it away) and <name>.key_secret (keep it), in `folder` (made
    with its parents). `name` is a plain file name: one with a folder in it would put the keys elsewhere."""
    import zmq.auth

    if not name or name in (".", "..") or Path(name).name != name:
        raise ConfigError(f"key name {name!r}: give a plain file name such as rtkp (no folder in it)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def serve(sock, key_file: str | Path, clients_dir: str | Path | None, auth=None):
    """Make `sock` (not yet bound) a CURVE server with the key pair in `key_file` that admits only the clients whose
    public keys are in `clients_dir`. The admission check is a ZeroMQ authenticator thread on the socket's context:
    pass the one a previous call returned to share it between sockets of one context. Returns the authenticator;
    stop it (`auth.stop()`) after closing the sockets."""
    from zmq.auth.thread import ThreadAuthenticator

    if not clients_dir:
        raise ConfigError("CURVE needs the folder of allowed client public keys (--curve-clients DIR)")
    if not Path(clients_dir).is_dir():
        raise ConfigError(f"--curve-clients {clients_dir}: not a folder of allowed clients' .key files")
    secret, public = load_key(key_file, secret=True), load_key(key_file, secret=False)  # before a thread starts
    if auth is None:
        auth = ThreadAuthenticator(sock.context)
        auth.start()
        auth.configure_curve(domain="*", location=str(clients_dir))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def connect(sock, server_key: str | Path, client_key: str | Path) -> None:
    """Make `sock` (not yet connected) a CURVE client of the server whose public key file is `server_key`, with this
    client's key pair `client_key` (the .key_secret file; its public half must be in the server's clients folder).
    A key file that does not load closes `sock` before the error goes up: the caller has no socket to clean up."""
    try:
        sock.curve_serverkey = load_key(server_key, secret=False)
        sock.curve_publickey = load_key(client_key, secret=False)
        sock.curve_secretkey = load_key(client_key, secret=True)
    except BaseException:
        sock.close()
        raise
