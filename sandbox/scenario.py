"""Scenario files -> a Tenant; generated campaigns with their truth (what a run should find).

The YAML shape is documented in sandbox/README.md. Keys are generated only when a scenario
asks for them (`certificate: generate`, `key: generate`) and cached per process, so reloading
the same scenario (every test does) costs no RSA key generation after the first time.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

from sandbox.tenant import (FOLDERS, GoogleServiceAccount, Mailbox, MicrosoftApp, Submission,
                            Tenant, Verdict, utc_now)

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")
TOP_KEYS = ("tenant_id", "microsoft", "google", "cloudflare", "mailboxes", "groups", "messages",
            "campaigns", "submissions")

_KEY_CACHE: Dict[Tuple[str, str], Tuple[str, str]] = {}
_KEY_LOCK = threading.Lock()


# -- keys ------------------------------------------------------------------------------------
def _rsa_key_pem() -> Tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return key, pem


def generated_certificate(client_id: str) -> Tuple[str, str]:
    """(private key PEM, self-signed certificate PEM) for an app's client assertions."""
    with _KEY_LOCK:
        cached = _KEY_CACHE.get(("cert", client_id))
        if cached:
            return cached
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID
        key, key_pem = _rsa_key_pem()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox-%s" % client_id)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .sign(key, hashes.SHA256()))
        pair = (key_pem, cert.public_bytes(serialization.Encoding.PEM).decode())
        _KEY_CACHE[("cert", client_id)] = pair
        return pair


def generated_service_account_key(client_email: str) -> Tuple[str, str]:
    """(private key PEM, public key PEM) of a service account's JSON key."""
    with _KEY_LOCK:
        cached = _KEY_CACHE.get(("sa", client_email))
        if cached:
            return cached
        from cryptography.hazmat.primitives import serialization
        key, key_pem = _rsa_key_pem()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        _KEY_CACHE[("sa", client_email)] = (key_pem, public)
        return key_pem, public


# -- times -----------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: Any, now: dt.datetime, name: str) -> dt.datetime:
    """"-10m" (relative to load time), an ISO 8601 string, or a datetime."""
    if value is None:
        return now
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    text = str(value).strip()
    match = _RELATIVE.match(text)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return now + dt.timedelta(seconds=sign * float(match.group(2)) * _UNITS[match.group(3)])
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("%s: %r is neither a relative time like -10m nor ISO 8601"
                         % (name, value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


# -- loading ---------------------------------------------------------------------------------
def load_scenario_file(path: str) -> Tenant:
    if not os.path.isabs(path) and not os.path.exists(path):
        candidate = os.path.join(SCENARIO_DIR, path)
        path = candidate if os.path.exists(candidate) else candidate + ".yaml"
    with open(path) as handle:
        return load_scenario(yaml.safe_load(handle))


def load_scenario(data: Any) -> Tenant:
    """A Tenant from a scenario mapping (or its YAML/JSON text)."""
    if isinstance(data, (bytes, str)):
        data = yaml.safe_load(data)
    if not isinstance(data, dict):
        raise ValueError("scenario: expected a mapping at the top level")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ValueError("scenario: unknown key(s) %s" % ", ".join(unknown))
    now = utc_now()
    tenant = Tenant(str(data.get("tenant_id") or "sandbox-tenant"))
    microsoft = data.get("microsoft") or {}
    for domain in microsoft.get("domains") or []:
        tenant.add_domain(domain, "microsoft")
    for spec in microsoft.get("apps") or []:
        _add_app(tenant, spec)
    google = data.get("google") or {}
    for domain in google.get("domains") or []:
        tenant.add_domain(domain, "google")
    for spec in google.get("service_accounts") or []:
        _add_service_account(tenant, spec)
    cloudflare = data.get("cloudflare") or {}
    if cloudflare.get("account_id"):
        tenant.cloudflare_account_id = str(cloudflare["account_id"])
    if cloudflare.get("api_token"):
        tenant.cloudflare_tokens.add(str(cloudflare["api_token"]))
    for spec in data.get("mailboxes") or []:
        tenant.add_mailbox(spec["address"], provider=spec.get("provider"),
                           kind=spec.get("kind", "user"),
                           display_name=spec.get("display_name", ""))
    for spec in data.get("groups") or []:
        tenant.add_group(spec["address"], list(spec.get("members") or []),
                         provider=spec.get("provider"))
    for index, spec in enumerate(data.get("messages") or []):
        _add_message(tenant, spec, now, "messages[%d]" % index)
    for index, spec in enumerate(data.get("campaigns") or []):
        spec = dict(spec)
        if "scanned_at" in spec:
            spec["scanned_at"] = parse_time(spec["scanned_at"], now,
                                            "campaigns[%d].scanned_at" % index)
        generate_campaign(tenant, **spec)
    for index, spec in enumerate(data.get("submissions") or []):
        _add_submission(tenant, spec, now, "submissions[%d]" % index)
    return tenant


def _add_app(tenant: Tenant, spec: Dict[str, Any]) -> None:
    client_id = str(spec["client_id"])
    cert = spec.get("certificate")
    private_pem, cert_pem = "", None
    if cert == "generate":
        private_pem, cert_pem = generated_certificate(client_id)
    elif cert:
        cert_pem = str(cert)
        private_pem = str(spec.get("private_key") or "")
    tenant.microsoft_apps[client_id] = MicrosoftApp(
        client_id=client_id, client_secret=spec.get("client_secret"), certificate_pem=cert_pem,
        private_key_pem=private_pem, consent_granted=bool(spec.get("consent_granted", True)),
        permissions=set(spec.get("permissions") or ["Mail.ReadWrite"]))


def _add_service_account(tenant: Tenant, spec: Dict[str, Any]) -> None:
    email = str(spec["client_email"])
    if spec.get("key", "generate") == "generate":
        private_pem, public_pem = generated_service_account_key(email)
    else:
        private_pem, public_pem = str(spec.get("private_key") or ""), str(spec["public_key"])
    key_id = spec.get("private_key_id") or hashlib.sha1(public_pem.encode()).hexdigest()
    tenant.google_accounts[email.lower()] = GoogleServiceAccount(
        client_email=email, private_key_id=key_id, public_key_pem=public_pem,
        private_key_pem=private_pem, scopes=set(spec.get("scopes") or []))


def _mailbox_for(tenant: Tenant, address: str) -> Mailbox:
    box = tenant.mailbox(address)
    return box if box is not None else tenant.add_mailbox(address)


def _add_message(tenant: Tenant, spec: Dict[str, Any], now: dt.datetime, where: str) -> None:
    message_id = spec.get("message_id")
    if not message_id:
        raise ValueError("%s.message_id is required" % where)
    scanned = parse_time(spec.get("scanned_at"), now, where + ".scanned_at")
    received = parse_time(spec.get("received_at", spec.get("scanned_at")), now,
                          where + ".received_at")
    subject, sender = spec.get("subject", ""), spec.get("from", "")
    copies = []
    for index, copy in enumerate(spec.get("copies") or []):
        folder = copy.get("folder", "inbox")
        if folder not in FOLDERS:
            raise ValueError("%s.copies[%d].folder: %r is not one of %s"
                             % (where, index, folder, FOLDERS))
        box = _mailbox_for(tenant, copy["mailbox"])
        tenant.deliver(box, message_id, folder=folder, is_read=bool(copy.get("read", False)),
                       subject=subject, sender=sender, received_at=received)
        copies.append(box.address)
    recipients = spec.get("recipients") or (copies + list(spec.get("groups") or []))
    if spec.get("disposition"):
        add_verdict(tenant, message_id, sender, recipients, subject, spec["disposition"],
                    scanned, parse_time(spec.get("sent_at"), received, where + ".sent_at"),
                    is_phish_submission=bool(spec.get("is_phish_submission", False)))


def add_verdict(tenant: Tenant, message_id: str, sender: str, recipients: List[str],
                subject: str, disposition: str, scanned_at: dt.datetime,
                sent_at: Optional[dt.datetime] = None, is_phish_submission: bool = False,
                verdict_id: Optional[str] = None) -> Verdict:
    postfix = uuid.uuid4().hex[:10].upper()
    return tenant.add_verdict(Verdict(
        id=verdict_id or "%s-%s" % (postfix, uuid.uuid4().hex[:8]), message_id=message_id,
        sender=sender, recipients=list(recipients), subject=subject,
        final_disposition=disposition, scanned_at=scanned_at, sent_at=sent_at or scanned_at,
        postfix_id=postfix, is_phish_submission=is_phish_submission))


def _add_submission(tenant: Tenant, spec: Dict[str, Any], now: dt.datetime, where: str) -> None:
    message_id = spec.get("message_id")
    if not message_id:
        raise ValueError("%s.message_id is required" % where)
    subject = spec.get("subject")
    if subject is None:
        subject = next((c.subject for _, c in tenant.copies_of(message_id)), "")
    tenant.add_submission(Submission(
        submission_id=str(spec.get("submission_id") or uuid.uuid4()),
        requested_ts=parse_time(spec.get("requested_ts"), now, where + ".requested_ts"),
        requested_by=spec.get("requested_by", ""), message_id=message_id, subject=subject,
        original_disposition=spec.get("original_disposition", "NONE"),
        requested_disposition=spec.get("requested_disposition", "MALICIOUS"),
        outcome_disposition=spec.get("outcome_disposition"), outcome=spec.get("outcome"),
        status=spec.get("status", "pending"), type=spec.get("type", "Team")))


# -- campaigns and their truth ---------------------------------------------------------------
# Where each destination puts a copy, per provider (canonical folders).
DESTINATION_FOLDER = {
    "microsoft": {"inbox": "inbox", "junk": "junk", "trash": "trash",
                  "soft_delete": "soft_delete", "hard_delete": "purged"},
    "google": {"inbox": "inbox", "junk": "junk", "trash": "trash", "soft_delete": "trash",
               "hard_delete": "purged"},
}


@dataclass
class MailboxTruth:
    address: str
    provider: str
    kind: str
    present: bool  # a reachable copy exists
    folder: Optional[str] = None
    was_read: Optional[bool] = None
    via_group: Optional[str] = None  # reached only through this distribution list

    def expected(self, destination: str) -> Tuple[str, Optional[str]]:
        """(status, reason) a correct retraction run reports for this mailbox."""
        if self.kind in ("unlicensed", "not_discoverable"):
            return "failed", "not_a_mailbox"
        if self.kind == "policy_blocked":
            return "failed", "not_authorized"
        if not self.present:
            return "failed", "not_found"
        if DESTINATION_FOLDER[self.provider][destination] == self.folder:
            return "already_in_destination", None
        return "retracted", None


@dataclass
class CampaignTruth:
    message_id: str
    recipients: List[str]  # as the verdict lists them: mailboxes and group addresses
    mailboxes: Dict[str, MailboxTruth] = field(default_factory=dict)  # lower address -> truth
    groups: Dict[str, List[str]] = field(default_factory=dict)  # group address -> members

    def expected(self, destination: str, expand_groups: bool = True
                 ) -> Dict[str, Tuple[str, Optional[str]]]:
        """address -> (status, reason). With expand_groups the members stand in for their
        group; without it the group address itself fails as not_a_mailbox."""
        result = {}
        for truth in self.mailboxes.values():
            if truth.via_group and not expand_groups:
                continue
            result[truth.address] = truth.expected(destination)
        if not expand_groups:
            for group in self.groups:
                result[group] = ("failed", "not_a_mailbox")
        return result

    def counts(self, destination: str, expand_groups: bool = True) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for status, reason in self.expected(destination, expand_groups).values():
            key = status if reason is None else "%s:%s" % (status, reason)
            counts[key] = counts.get(key, 0) + 1
        return counts


def _first_domain(tenant: Tenant, provider: str) -> Optional[str]:
    for domain, owner in tenant.domains.items():
        if owner == provider:
            return domain
    return None


def generate_campaign(tenant: Tenant, message_id: str, copies: int = 100,
                      microsoft_share: float = 0.6, read_share: float = 0.3,
                      deleted_share: float = 0.05, junk_share: float = 0.02,
                      distribution_lists: int = 0, unlicensed: int = 0,
                      policy_blocked: int = 0, seed: int = 0, subject: str = "Campaign",
                      sender: str = "attacker@evil.example",
                      disposition: Optional[str] = None,
                      scanned_at: Optional[dt.datetime] = None,
                      group_size: Optional[int] = None) -> CampaignTruth:
    """Deliver one phishing message to `copies` recipients plus special mailboxes and return
    the truth. Counts are exact (shares are rounded), placement is seeded."""
    rng = random.Random(seed)
    ms_domain, g_domain = _first_domain(tenant, "microsoft"), _first_domain(tenant, "google")
    if ms_domain is None and g_domain is None:
        raise ValueError("campaign %s: the tenant has no domains" % message_id)
    n_ms = copies if g_domain is None else (0 if ms_domain is None
                                            else int(round(copies * microsoft_share)))
    addresses = (["user%05d@%s" % (i, ms_domain) for i in range(n_ms)]
                 + ["user%05d@%s" % (i, g_domain) for i in range(copies - n_ms)])
    rng.shuffle(addresses)
    received = scanned_at or utc_now()
    truth = CampaignTruth(message_id=message_id, recipients=[])
    n_deleted = int(round(copies * deleted_share))
    n_junk = min(copies - n_deleted, int(round(copies * junk_share)))
    order = list(range(copies))
    rng.shuffle(order)
    deleted = set(order[:n_deleted])
    junk = set(order[n_deleted:n_deleted + n_junk])
    present = [i for i in range(copies) if i not in deleted]
    read = set(rng.sample(present, int(round(len(present) * read_share))))
    for index, address in enumerate(addresses):
        box = _mailbox_for(tenant, address)
        reachable = box.kind in ("user", "shared")
        if index in deleted:
            truth.mailboxes[address] = MailboxTruth(address, box.provider, box.kind, False)
            continue
        folder = "junk" if index in junk else "inbox"
        tenant.deliver(box, message_id, folder=folder, is_read=index in read,
                       subject=subject, sender=sender, received_at=received)
        truth.mailboxes[address] = MailboxTruth(address, box.provider, box.kind, reachable,
                                                folder if reachable else None,
                                                (index in read) if reachable else None)
    direct = list(addresses)
    tag = hashlib.sha1(message_id.encode()).hexdigest()[:6]
    size = group_size or max(2, min(25, copies // 50))
    for k in range(distribution_lists):
        provider = "microsoft" if (k % 2 == 0 or g_domain is None) and ms_domain else "google"
        domain = ms_domain if provider == "microsoft" else g_domain
        pool = [a for a in direct if tenant.mailbox(a).provider == provider]
        members = pool[:size]
        group_address = "dl-%s-%d@%s" % (tag, k, domain)
        tenant.add_group(group_address, members, provider=provider)
        truth.groups[group_address] = members
        for member in members:
            direct.remove(member)
            truth.mailboxes[member].via_group = group_address
    specials = []
    for j in range(unlicensed):
        domain = ms_domain if (j % 2 == 0 or g_domain is None) and ms_domain else g_domain
        specials.append(("unlicensed%03d@%s" % (j, domain), "unlicensed", False))
    for j in range(policy_blocked):
        if ms_domain is None:
            break
        specials.append(("blocked%03d@%s" % (j, ms_domain), "policy_blocked", True))
    for address, kind, delivered in specials:
        box = tenant.mailbox(address) or tenant.add_mailbox(address, kind=kind)
        if delivered:
            tenant.deliver(box, message_id, subject=subject, sender=sender,
                           received_at=received)
        truth.mailboxes[address] = MailboxTruth(address, box.provider, box.kind, False)
        direct.append(address)
    truth.recipients = direct + list(truth.groups)
    if disposition:
        add_verdict(tenant, message_id, sender, truth.recipients, subject, disposition,
                    received)
    tenant.campaigns[message_id] = truth
    return truth
