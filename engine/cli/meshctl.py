"""meshctl: CLI of the helper's LocalAPI (up, down, status, ping, netcheck, exit-node, dns, login, logout, version).

Works against our helper and, for the tailscaled-compatible commands, against a real tailscaled
socket. Exit codes: 0 ok, 1 the operation failed, 2 usage, 3 helper not running,
4 access denied (not root / not the operator), 5 not connected (logged out, stopped, ...).
`dns query` exits 0 when the reply holds answers, 1 for NXDOMAIN/SERVFAIL/no data of that type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

import dns.exception
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from engine.fs import authkey
from engine.ipn.dnsquery import QueryError, parse_query_type, to_fqdn
from engine.ipn.exitnode import NodeIdent, ident_of_status, resolve_exit_node
from engine.localapi.client import AccessDenied, HelperNotRunning, LocalAPIError, LocalClient, default_socket
from engine.localapi.schema import (
    IPN_VERSION,
    DNSResolver,
    MaskedPrefs,
    NotifyWatchOpt,
    Options,
    PeerStatus,
    Prefs,
    State,
    Status,
)
from engine.net.tsaddr import EXIT_ROUTES, canonical_routes

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_HELPER, EXIT_DENIED, EXIT_NOT_CONNECTED = 0, 1, 2, 3, 4, 5


class CLIError(Exception):
    def __init__(self, msg: str, code: int = EXIT_FAIL) -> None:
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------------------- helpers


def _short_name(st: Status, ps: PeerStatus) -> str:
    name = ps.dns_name.rstrip(".")
    suffix = st.magic_dns_suffix.rstrip(".")
    if suffix and name.endswith("." + suffix):
        name = name[: -len(suffix) - 1]
    return name or ps.host_name or "-"


def _path(ps: PeerStatus) -> str:
    if ps.cur_addr:
        return f"direct {ps.cur_addr}"
    if ps.relay:
        return f'relay "{ps.relay}"'
    return "-"


def _state_message(st: Status) -> str | None:
    """None if running/starting, else what to tell the user."""
    s = st.backend_state
    if s in ("Running", "Starting"):
        return None
    if s == "Stopped":
        return "meshvpn is stopped; run `meshctl up` to connect."
    if s == "NeedsLogin":
        m = "Logged out; run `meshctl up` (or `meshctl login`) to log in."
        if st.auth_url:
            m += f"\nLog in at: {st.auth_url}"
        return m
    if s == "NeedsMachineAuth":
        return "This machine is waiting for approval by the tailnet admin."
    return f"unexpected state: {s}"


def _find_peer(st: Status, arg: str) -> PeerStatus | None:
    """The peer ``arg`` names (IP, MagicDNS name or short name, hostname, StableID): engine.ipn.exitnode's rules."""

    def ident(ps: PeerStatus) -> NodeIdent:
        i = ident_of_status(ps)
        return NodeIdent(addresses=i.addresses, stable_id=i.stable_id, names=(*i.names, _short_name(st, ps)))

    return resolve_exit_node(arg, st.peers(), ident)


def _table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def _emit_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------- commands


async def cmd_status(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    st = await c.status()
    if a.json:
        _emit_json(st.to_dict(), out)
        return EXIT_OK
    msg = _state_message(st)
    if msg:
        out.write(msg + "\n")
        return EXIT_NOT_CONNECTED
    latency: dict[str, str] = {}
    peers = st.peers()
    if a.latency:

        async def one(ps: PeerStatus) -> None:
            if not ps.online or not ps.tailscale_ips:
                return
            try:
                async with asyncio.timeout(3.0):
                    r = await c.ping(ps.tailscale_ips[0], "disco")
                if not r.err:
                    latency[ps.public_key] = f"{r.latency_seconds * 1000:.0f}ms"
            except (asyncio.TimeoutError, LocalAPIError):
                pass

        await asyncio.gather(*(one(p) for p in peers))
    rows = [["IP", "NAME", "OS", "STATUS", "PATH", "LATENCY"]]
    if st.self is not None:
        rows.append([st.self.first_ip(), _short_name(st, st.self), st.self.os, "self", "-", "-"])
    for ps in peers:
        if not ps.online:
            state = "offline"
        elif ps.exit_node:
            state = "exit node (in use)"
        elif ps.active:
            state = "active"
        else:
            state = "idle"
        if ps.exit_node_option and not ps.exit_node:
            state += "; offers exit node"
        rows.append(
            [
                ps.first_ip(),
                _short_name(st, ps),
                ps.os or "-",
                state,
                _path(ps) if ps.online else "-",
                latency.get(ps.public_key, "-"),
            ]
        )
    _table(rows, out)
    for h in st.health or []:
        out.write(f"# health: {h}\n")
    return EXIT_OK


async def cmd_ping(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    st = await c.status()
    msg = _state_message(st)
    if msg:
        out.write(msg + "\n")
        return EXIT_NOT_CONNECTED
    ip = a.target
    name = a.target
    ps = _find_peer(st, a.target)
    if ps is not None:
        ip, name = ps.first_ip(), _short_name(st, ps)
    elif st.self is not None and (a.target in (st.self.tailscale_ips or []) or a.target == _short_name(st, st.self)):
        out.write(f"{st.self.first_ip()} is this machine's own Tailscale IP\n")
        return EXIT_OK
    results = []
    got = False
    for i in range(a.count):
        try:
            async with asyncio.timeout(a.timeout):
                r = await c.ping(ip, a.type)
        except asyncio.TimeoutError:
            results.append({"IP": ip, "Err": "timeout"})
            if not a.json:
                out.write(f"ping {ip} timed out\n")
            continue
        results.append(r.to_dict())
        if r.err:
            if not a.json:
                out.write(f"{ip}: {r.err}\n")
            if r.is_local_ip:
                return EXIT_OK
            continue
        got = True
        via = f"DERP({r.derp_region_code})" if r.derp_region_id else (r.endpoint or a.type)
        if not a.json:
            out.write(
                f"pong from {r.node_name or name} ({r.node_ip or ip}) via {via} in {r.latency_seconds * 1000:.1f}ms\n"
            )
        if i + 1 < a.count:
            await asyncio.sleep(a.interval)
    if a.json:
        _emit_json(results, out)
    return EXIT_OK if got else EXIT_FAIL


async def cmd_netcheck(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    rep = await c.netcheck()
    if a.json:
        _emit_json(rep, out)
        return EXIT_OK
    out.write("Report:\n")
    out.write(f"\t* UDP: {rep.get('UDP')}\n")
    if rep.get("GlobalV4"):
        out.write(f"\t* IPv4: yes, {rep['GlobalV4']}\n")
    if rep.get("GlobalV6"):
        out.write(f"\t* IPv6: yes, {rep['GlobalV6']}\n")
    out.write(f"\t* MappingVariesByDestIP: {rep.get('MappingVariesByDestIP')}\n")
    codes = rep.get("RegionCodes") or {}
    pref = rep.get("PreferredDERP")
    if pref:
        out.write(f"\t* Nearest DERP: {codes.get(str(pref), pref)}\n")
    lat = rep.get("RegionLatency") or {}
    if lat:
        out.write("\t* DERP latency:\n")
        for rid, ms in sorted(lat.items(), key=lambda kv: kv[1]):  # milliseconds (engine.net.netcheck.Report)
            out.write(f"\t\t- {codes.get(str(rid), rid)}: {float(ms):.1f}ms\n")
    return EXIT_OK


async def _resolve_exit_node(st: Status, arg: str) -> tuple[str, str]:
    """(ExitNodeID, ExitNodeIP) for a name/IP argument."""
    if not arg:
        return "", ""
    ps = _find_peer(st, arg)
    if ps is None:
        if st.peer is None and arg.replace(".", "").replace(":", "").isalnum() and any(ch in arg for ch in ".:"):
            return "", arg  # no netmap yet: pass the IP through; the helper resolves it later
        raise CLIError(f"no peer named or addressed {arg!r}; see `meshctl exit-node list`")
    if not ps.exit_node_option:
        raise CLIError(f"{_short_name(st, ps)} ({ps.first_ip()}) is not offering to be an exit node")
    return ps.id, ""


async def cmd_exit_node(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    st = await c.status()
    if a.exit_cmd == "list":
        opts = [ps for ps in st.peers() if ps.exit_node_option]
        if a.json:
            _emit_json(
                [
                    {
                        "ID": p.id,
                        "Name": _short_name(st, p),
                        "IP": p.first_ip(),
                        "Online": p.online,
                        "Selected": p.exit_node,
                    }
                    for p in opts
                ],
                out,
            )
            return EXIT_OK
        if not opts:
            out.write("No exit nodes are offered in this tailnet.\n")
            return EXIT_OK
        rows = [["IP", "NAME", "STATUS"]]
        for p in opts:
            rows.append(
                [p.first_ip(), _short_name(st, p), "selected" if p.exit_node else ("online" if p.online else "offline")]
            )
        _table(rows, out)
        return EXIT_OK
    node_id, node_ip = await _resolve_exit_node(st, a.node)
    mp = MaskedPrefs(Prefs(exit_node_id=node_id, exit_node_ip=node_ip), frozenset({"ExitNodeID", "ExitNodeIP"}))
    p = await c.edit_prefs(mp)
    if a.json:
        _emit_json({"ExitNodeID": p.exit_node_id, "ExitNodeIP": p.exit_node_ip}, out)
    elif a.node:
        out.write(f"Exit node set to {a.node}.\n")
    else:
        out.write("Exit node cleared.\n")
    return EXIT_OK


def _auth_key(raw: str) -> str:
    """`file:PATH` (preferred) or a literal key (works, with a warning: argv is visible in `ps`)."""
    try:
        return authkey.resolve(raw, warn=sys.stderr) or ""
    except authkey.AuthKeyError as e:
        raise CLIError(str(e), EXIT_USAGE) from None


def _subnet_routes(text: str) -> list[str]:
    """`--advertise-routes 10.0.0.0/24,fd00::/64` as canonical prefixes (CLIError on a bad one)."""
    try:
        routes = list(canonical_routes(text))
    except ValueError as e:
        raise CLIError(f"--advertise-routes: {e}") from None
    if any(r in EXIT_ROUTES for r in routes):
        raise CLIError("--advertise-routes: use --advertise-exit-node to offer a default route")
    return routes


async def cmd_up(c: LocalClient, a: argparse.Namespace, out: TextIO, *, force_login: bool = False) -> int:
    st = await c.status()
    cur = await c.prefs()
    changes: dict[str, Any] = {"want_running": True}
    if a.login_server:
        changes["control_url"] = a.login_server
    if getattr(a, "hostname", None) is not None:
        changes["hostname"] = a.hostname
    if getattr(a, "exit_node", None) is not None:
        nid, nip = await _resolve_exit_node(st, a.exit_node)
        changes["exit_node_id"], changes["exit_node_ip"] = nid, nip
    if getattr(a, "accept_dns", None) is not None:
        changes["corp_dns"] = a.accept_dns
    if getattr(a, "exit_node_allow_lan_access", None) is not None:
        changes["exit_node_allow_lan_access"] = a.exit_node_allow_lan_access
    if getattr(a, "accept_routes", None) is not None:
        changes["route_all"] = a.accept_routes
    if getattr(a, "shields_up", None) is not None:
        changes["shields_up"] = a.shields_up
    if getattr(a, "advertise_routes", None) is not None or getattr(a, "advertise_exit_node", None) is not None:
        cur_routes = list(cur.advertise_routes or [])
        offers_exit = all(r in cur_routes for r in EXIT_ROUTES)
        if getattr(a, "advertise_routes", None) is not None:
            routes = _subnet_routes(a.advertise_routes)
        else:
            routes = [r for r in cur_routes if r not in EXIT_ROUTES]
        if getattr(a, "advertise_exit_node", None) is not None:
            offers_exit = a.advertise_exit_node
        if offers_exit:
            routes += list(EXIT_ROUTES)
        changes["advertise_routes"] = routes or None
    auth_key = _auth_key(a.auth_key) if a.auth_key else ""
    control_changed = bool(a.login_server) and a.login_server != cur.control_url
    if st.backend_state == "Running" and not auth_key and not control_changed and not force_login:
        await c.edit_prefs(MaskedPrefs.of(**changes))
        out.write("Connected.\n") if not a.json else _emit_json({"BackendState": "Running"}, out)
        return EXIT_OK
    new = MaskedPrefs.of(**changes).apply_to(cur)
    why = await c.check_prefs(new)
    if why:
        raise CLIError(why)
    watch = c.watch_ipn_bus(NotifyWatchOpt.INITIAL_STATE | NotifyWatchOpt.NO_PRIVATE_KEYS)
    try:
        first = await watch.__anext__()  # subscribed before start: no notification can be missed
        await c.start(Options(update_prefs=new, auth_key=auth_key))
        if (force_login or not st.have_node_key) and not auth_key:
            await c.login_interactive()
        state = first.state
        printed_url = ""

        async def wait() -> int:
            nonlocal state, printed_url
            st2 = await c.status(peers=False)
            if st2.backend_state == "Running":
                return EXIT_OK
            async for n in watch:
                if n.err_message:
                    raise CLIError(f"backend error: {n.err_message}")
                if n.state is not None:
                    state = n.state
                    if state == State.RUNNING:
                        return EXIT_OK
                    if state == State.NEEDS_MACHINE_AUTH:
                        out.write("This machine is waiting for approval by the tailnet admin.\n")
                if n.browse_to_url and n.browse_to_url != printed_url:
                    printed_url = n.browse_to_url
                    if a.json:
                        _emit_json({"AuthURL": printed_url, "BackendState": "NeedsLogin"}, out)
                    else:
                        out.write(f"\nTo authenticate, visit:\n\n\t{printed_url}\n\n")
                    out.flush()
            raise CLIError("the helper ended the status stream before the connection came up")

        try:
            async with asyncio.timeout(a.timeout if a.timeout > 0 else None):
                rc = await wait()
        except asyncio.TimeoutError:
            raise CLIError(
                f"timed out after {a.timeout:g}s waiting to connect "
                f"(state {state.go_name if state is not None else '?'})"
            ) from None
    finally:
        await watch.aclose()
    if a.json:
        _emit_json({"BackendState": "Running"}, out)
    else:
        out.write("Connected.\n")
    return rc


async def cmd_down(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    st = await c.status(peers=False)
    if st.backend_state == "Stopped":
        out.write("Already stopped.\n") if not a.json else _emit_json({"BackendState": "Stopped"}, out)
        return EXIT_OK
    await c.edit_prefs(MaskedPrefs.of(want_running=False))
    out.write("Disconnected.\n") if not a.json else _emit_json({"BackendState": "Stopped"}, out)
    return EXIT_OK


async def cmd_logout(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    await c.logout()
    out.write("Logged out.\n") if not a.json else _emit_json({"BackendState": "NeedsLogin"}, out)
    return EXIT_OK


async def cmd_version(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    daemon = ""
    try:
        daemon = (await c.version()).get("Version", "")
    except LocalAPIError:
        daemon = (await c.status(peers=False)).version  # a real tailscaled has no meshvpn/version
    except HelperNotRunning:
        daemon = ""
    if a.json:
        _emit_json({"Client": IPN_VERSION, "Daemon": daemon}, out)
    else:
        out.write(f"meshctl {IPN_VERSION}\n")
        out.write(f"helper  {daemon or '(not running)'}\n")
    return EXIT_OK


async def cmd_whois(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    r = await c.whois(a.addr)
    if r is None:
        out.write(f"{a.addr}: no such peer\n")
        return EXIT_FAIL
    if a.json:
        _emit_json(r.to_dict(), out)
    else:
        node = r.node or {}
        out.write(f"Machine: {node.get('Name', '')} ({node.get('StableID', '')})\n")
        if r.user_profile:
            out.write(f"User:    {r.user_profile.login_name}\n")
    return EXIT_OK


def _resolver_json(r: DNSResolver | dict[str, Any]) -> dict[str, Any]:
    d = r.to_dict() if isinstance(r, DNSResolver) else dict(r)
    out: dict[str, Any] = {"Addr": d.get("Addr", "")}
    if d.get("BootstrapResolution"):
        out["BootstrapResolution"] = list(d["BootstrapResolution"])
    return out


def _resolver_text(r: dict[str, Any]) -> str:
    boot = r.get("BootstrapResolution")
    return f"{r.get('Addr', '')} (bootstrap {', '.join(boot)})" if boot else str(r.get("Addr", ""))


async def _dns_config(c: LocalClient) -> dict[str, Any]:
    """The tailnet's DNSConfig from the netmap (the IPN bus's initial netmap, as `tailscale dns status` reads it)."""
    watch = c.watch_ipn_bus(NotifyWatchOpt.INITIAL_NETMAP | NotifyWatchOpt.NO_PRIVATE_KEYS)
    try:
        async with asyncio.timeout(10.0):
            n = await watch.__anext__()
    except (StopAsyncIteration, asyncio.TimeoutError):
        return {}
    finally:
        await watch.aclose()
    nm = n.net_map or {}
    return nm.get("DNS") or {}


async def cmd_dns_status(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    st = await c.status(peers=False)
    prefs = await c.prefs()
    data: dict[str, Any] = {"BackendState": st.backend_state, "TailscaleDNS": prefs.corp_dns, "CurrentTailnet": None}
    running = st.backend_state in ("Running", "Starting") and st.current_tailnet is not None
    if running:
        ct = st.current_tailnet
        data["CurrentTailnet"] = {
            "Name": ct.name,
            "MagicDNSEnabled": ct.magic_dns_enabled,
            "MagicDNSSuffix": ct.magic_dns_suffix,
            "SelfDNSName": st.self.dns_name if st.self is not None else "",
        }
        dc = await _dns_config(c)
        data["Resolvers"] = [_resolver_json(r) for r in dc.get("Resolvers") or []]
        routes = sorted((dc.get("Routes") or {}).items())
        data["SplitDNSRoutes"] = {k: [_resolver_json(r) for r in v] for k, v in routes if v}
        # a route without resolvers: names MagicDNS answers itself (the tailnet domain, reverse zones)
        data["LocalDomains"] = [k for k, v in routes if not v]
        data["FallbackResolvers"] = [_resolver_json(r) for r in dc.get("FallbackResolvers") or []]
        data["SearchDomains"] = sorted(dc.get("Domains") or [])
        data["ExtraRecords"] = [
            {"Name": r.get("Name", ""), "Type": r.get("Type", ""), "Value": r.get("Value", "")}
            for r in dc.get("ExtraRecords") or []
        ]
        data["SystemDNS"], data["SystemDNSError"] = None, ""
        try:
            data["SystemDNS"] = (await c.dns_os_config()).to_dict()
        except AccessDenied:
            data["SystemDNSError"] = "access denied: reading the OS DNS configuration needs root or the operator"
        except LocalAPIError as e:
            data["SystemDNSError"] = e.message
    if a.json:
        _emit_json(data, out)
        return EXIT_OK if running else EXIT_NOT_CONNECTED
    w = out.write
    w(
        f"MagicDNS (use the tailnet's DNS): {'on' if prefs.corp_dns else 'off'}"
        f"{'' if prefs.corp_dns else '  (turn it on: meshctl up --accept-dns)'}\n"
    )
    if not running:
        w((_state_message(st) or "No tailnet information yet.") + "\n")
        return EXIT_NOT_CONNECTED
    ct = data["CurrentTailnet"]
    w(f"Tailnet:        {ct['Name'] or '-'}\n")
    if ct["MagicDNSEnabled"]:
        w(f"MagicDNS names: enabled tailnet-wide, suffix {ct['MagicDNSSuffix']}\n")
        w(f"This device:    {ct['SelfDNSName'].rstrip('.')}\n")
    else:
        w("MagicDNS names: disabled tailnet-wide\n")
    w(
        "Resolvers:      "
        + (
            ", ".join(_resolver_text(r) for r in data["Resolvers"])
            or "(none from the tailnet: the system's resolvers are used)"
        )
        + "\n"
    )
    w("Split DNS:" + ("" if data["SplitDNSRoutes"] else "      (no routes)") + "\n")
    routes = data["SplitDNSRoutes"]
    width = max((len(k) for k in routes), default=0)
    for dom, rs in routes.items():
        w(f"  {dom.ljust(width)}  -> {', '.join(_resolver_text(r) for r in rs)}\n")
    local = [d for d in data["LocalDomains"] if not d.rstrip(".").endswith(".arpa")]
    n_rev = len(data["LocalDomains"]) - len(local)
    if local or n_rev:
        w("Answered only by MagicDNS: " + ", ".join(local + ([f"{n_rev} reverse zones"] if n_rev else [])) + "\n")
    w("Search domains: " + (", ".join(data["SearchDomains"]) or "(none)") + "\n")
    if data["FallbackResolvers"]:
        w("Fallback:       " + ", ".join(_resolver_text(r) for r in data["FallbackResolvers"]) + "\n")
    if data["ExtraRecords"]:
        w("Extra records:\n")
        for r in data["ExtraRecords"]:
            w(f"  {r['Name']} {r['Type'] or 'A/AAAA'} {r['Value']}\n")
    w("OS DNS configuration:\n")
    sd = data["SystemDNS"]
    if sd is None:
        w(f"  ({data['SystemDNSError']})\n")
    elif not sd.get("MeshvpnApplied", True):
        why = (
            "MagicDNS is off"
            if not prefs.corp_dns
            else "--dns-mode none, or a network namespace sharing the host's /etc/resolv.conf"
        )
        w(f"  (left alone: {why}; 100.100.100.100 still answers when asked directly)\n")
    else:
        w("  nameservers:    " + (", ".join(sd.get("MeshvpnNameservers") or []) or "-") + "\n")
        w("  search domains: " + (", ".join(sd.get("MeshvpnSearchDomains") or []) or "-") + "\n")
        scope = "all names" if sd.get("MeshvpnRouteAll") else "only these"
        w(
            "  match domains:  "
            + (", ".join(sd.get("MeshvpnMatchDomains") or []) or "-")
            + f"  ({scope} go to MagicDNS)\n"
        )
    if sd is not None and sd.get("Nameservers"):
        w("  system resolvers before meshvpn: " + ", ".join(sd["Nameservers"]) + "\n")
    return EXIT_OK


def _answer_rows(msg: dns.message.Message) -> list[dict[str, Any]]:
    rows = []
    for rrset in msg.answer:
        for rd in rrset:
            rows.append(
                {
                    "Name": rrset.name.to_text(),
                    "TTL": rrset.ttl,
                    "Class": dns.rdataclass.to_text(rrset.rdclass),
                    "Type": dns.rdatatype.to_text(rrset.rdtype),
                    "Body": rd.to_text(),
                }
            )
    return rows


async def cmd_dns_query(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    try:
        to_fqdn(a.name)
        parse_query_type(a.type)
    except QueryError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    qtype = a.type.upper()
    try:
        res = await c.query_dns(a.name, qtype)
    except LocalAPIError as e:
        if e.status == 409:
            raise CLIError(e.message, EXIT_NOT_CONNECTED) from None
        raise
    try:
        msg = dns.message.from_wire(res.reply)
    except dns.exception.DNSException as e:
        raise CLIError(f"the helper returned an unparsable DNS reply: {e}") from None
    rcode = dns.rcode.to_text(msg.rcode())
    rows = _answer_rows(msg)
    resolvers = [_resolver_json(r) for r in res.resolvers or []]
    rc = EXIT_OK if msg.rcode() == dns.rcode.NOERROR and rows else EXIT_FAIL
    if a.json:
        _emit_json(
            {
                "Name": a.name,
                "QueryType": qtype,
                "ResponseCode": rcode,
                "Answers": rows,
                "Resolvers": resolvers,
                "AnsweredLocally": not resolvers,
            },
            out,
        )
        return rc
    w = out.write
    w(f"{a.name} {qtype} via MagicDNS (100.100.100.100):\n")
    if resolvers:
        w("  forwarded to:  " + ", ".join(_resolver_text(r) for r in resolvers) + "\n")
    else:
        w("  answered by:   MagicDNS itself (tailnet names; no upstream asked)\n")
    w(f"  response code: {rcode}\n")
    if rows:
        _table(
            [["NAME", "TTL", "CLASS", "TYPE", "DATA"]]
            + [[r["Name"], str(r["TTL"]), r["Class"], r["Type"], r["Body"]] for r in rows],
            out,
        )
    elif msg.rcode() == dns.rcode.NOERROR:
        w(f"  (the name exists, but has no {qtype} records)\n")
    return rc


async def cmd_dns(c: LocalClient, a: argparse.Namespace, out: TextIO) -> int:
    return await (cmd_dns_status if a.dns_cmd == "status" else cmd_dns_query)(c, a, out)


# ---------------------------------------------------------------------------- argv


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        help="LocalAPI socket (default: $MESHVPN_SOCKET or /run/meshvpn/meshvpn.sock)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p = argparse.ArgumentParser(prog="meshctl", description="Control the meshvpn helper.", parents=[common])
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def up_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--login-server", default="", metavar="URL", help="control server base URL (headscale or Tailscale)"
        )
        sp.add_argument(
            "--auth-key",
            default="",
            metavar="KEY",
            help='pre-auth key as "file:PATH" (a 0600 file; a literal key is visible in ps)',
        )
        sp.add_argument("--timeout", type=float, default=0, metavar="SEC", help="give up after SEC seconds (0 = wait)")

    up = sub.add_parser("up", parents=[common], help="connect (logging in if needed)")
    up_flags(up)
    up.add_argument(
        "--exit-node", default=None, metavar="NAME|IP", help='route internet traffic via this peer ("" = none)'
    )
    up.add_argument(
        "--advertise-exit-node",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offer this machine as an exit node",
    )
    up.add_argument("--hostname", default=None, help="name to register instead of the OS hostname")
    up.add_argument(
        "--accept-dns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the tailnet's DNS settings (MagicDNS)",
    )
    up.add_argument(
        "--exit-node-allow-lan-access",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with an exit node, keep directly connected LANs off the tunnel",
    )
    up.add_argument(
        "--advertise-routes",
        default=None,
        metavar="CIDRs",
        help='comma-separated subnet routes to offer to the tailnet ("" = none)',
    )
    up.add_argument(
        "--accept-routes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use subnet routes other nodes advertise",
    )
    up.add_argument(
        "--shields-up",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="block incoming connections from the tailnet",
    )
    login = sub.add_parser("login", parents=[common], help="log in (opens nothing; prints the URL)")
    up_flags(login)
    sub.add_parser("down", parents=[common], help="disconnect (stay logged in)")
    sub.add_parser("logout", parents=[common], help="disconnect and log out")
    st = sub.add_parser("status", parents=[common], help="show peers, paths and state")
    st.add_argument("--latency", action="store_true", help="ping each online peer once to fill the LATENCY column")
    pg = sub.add_parser("ping", parents=[common], help="ping a peer over the tailnet (disco/TSMP/ICMP)")
    pg.add_argument("target", metavar="NAME|IP")
    pg.add_argument("-c", "--count", type=int, default=3)
    pg.add_argument("--type", default="disco", choices=("disco", "TSMP", "ICMP"))
    pg.add_argument("--timeout", type=float, default=5.0)
    pg.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    sub.add_parser("netcheck", parents=[common], help="report UDP/NAT/DERP conditions")
    ex = sub.add_parser("exit-node", parents=[common], help="list or choose exit nodes")
    exs = ex.add_subparsers(dest="exit_cmd", metavar="list|set")
    exs.add_parser("list", parents=[common])
    es = exs.add_parser("set", parents=[common])
    es.add_argument("node", metavar="NAME|IP", help='peer to use ("" to stop using an exit node)')
    sub.add_parser("version", parents=[common], help="client and helper versions")
    wh = sub.add_parser("whois", parents=[common], help="which node/user has a Tailscale IP")
    wh.add_argument("addr")
    dn = sub.add_parser("dns", parents=[common], help="MagicDNS status and test queries")
    dns_sub = dn.add_subparsers(dest="dns_cmd", metavar="status|query")
    dns_sub.add_parser("status", parents=[common], help="MagicDNS on/off, resolvers, split DNS, the OS DNS settings")
    dq = dns_sub.add_parser("query", parents=[common], help="resolve a name as 100.100.100.100 would (root/operator)")
    dq.add_argument("name", metavar="NAME")
    dq.add_argument(
        "type", metavar="TYPE", nargs="?", default="A", help="A (default), AAAA, CNAME, MX, NS, PTR, SRV, TXT, ..."
    )
    return p


COMMANDS = {
    "status": cmd_status,
    "ping": cmd_ping,
    "netcheck": cmd_netcheck,
    "exit-node": cmd_exit_node,
    "up": cmd_up,
    "down": cmd_down,
    "logout": cmd_logout,
    "version": cmd_version,
    "whois": cmd_whois,
    "dns": cmd_dns,
}


async def run(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    if not a.cmd or (a.cmd == "exit-node" and not a.exit_cmd) or (a.cmd == "dns" and not a.dns_cmd):
        parser.print_help(err)
        return EXIT_USAGE
    a.json = getattr(a, "json", False)
    client = LocalClient(getattr(a, "socket", None) or default_socket())
    try:
        if a.cmd == "login":
            return await cmd_up(client, a, out, force_login=True)
        return await COMMANDS[a.cmd](client, a, out)
    except HelperNotRunning as e:
        err.write(f"meshctl: {e}\n  Start it with `sudo systemctl start mesh-helper` (or `sudo mesh-helper serve`).\n")
        return EXIT_NO_HELPER
    except AccessDenied as e:
        err.write(f"meshctl: access denied: {e.message}\n")
        return EXIT_DENIED
    except LocalAPIError as e:
        err.write(f"meshctl: {e.message} (HTTP {e.status})\n" if e.status else f"meshctl: {e.message}\n")
        return EXIT_FAIL
    except CLIError as e:
        err.write(f"meshctl: {e}\n")
        return e.code


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(run(list(sys.argv[1:] if argv is None else argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
