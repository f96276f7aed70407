"""Validation refuses hostile or malformed input with the field named, and keeps odd but
RFC-legal values intact for the providers to escape."""
from datetime import datetime, timedelta, timezone

import pytest

from retraction import validation
from retraction.config import load_settings
from retraction.model import Destination, Disposition, Mode, Provider, Trigger
from retraction.validation import InvalidRequest, build_request

# Each of these would widen a Gmail search, break an OData literal, forge a header or a log
# line, or is simply not a msg-id. All must be refused as message_id.
BAD_MESSAGE_IDS = [
    "x@y OR in:anywhere",
    "<x@y> OR <z@w>",
    "x@y\tOR\tin:anywhere",
    "<x@y>OR in:trash",
    "in:anywhere",
    "from:ceo@corp.example",
    "<from:ceo@corp.example>",
    "{x@y z@w}",
    "<{x@y}>",
    "<x{@y>",
    "<x}@y>",
    "(x@y)",
    "<x@y(comment)>",
    "<x@(y)>",
    '"x"@y',
    '<"quoted local"@y>',
    '<x@y">',
    "<x\\@y>",
    "<x@y\\>",
    "<x@y>\r\nBcc: evil@attacker.example",
    "<x@y>\n",
    "<x\x00@y>",
    "<x@y\x00>",
    "<x\x1b[31m@y>",
    "<x\x7f@y>",
    "<x\u0085@y>",
    "<x@y\u2028>",
    "<x@\u0443.example>",  # Cyrillic u
    "<\u0430dmin@corp.example>",  # Cyrillic a
    "<x@corp\uff0eexample>",  # fullwidth dot
    "<x\u200b@y>",  # zero width space
    "<x@y\u00a0>",  # no-break space
    "<x y@z>",
    "< x@y>",
    "<x@y >",
    "<x@y",
    "x@y>",
    "<<x@y>>",
    "<x@y><z@w>",
    "<x>",
    "<@y>",
    "<x@>",
    "<x@@y>",
    "<x@y@z>",
    "<.x@y>",
    "<x.@y>",
    "<x..y@z>",
    "<x@y..z>",
    "<x@[y z]>",
    "<x@[y\"]>",
    "<x@[y(]>",
    "<x@[]>",
    "<x,y@z>",
    "<x;y@z>",
    "<x@y,z>",
    "<x:y@z>",
    "<%s@y>" % ("a" * 1000),
    "",
    "   ",
    # issue 13, finding 7: a tab is not trimmed like a space; the value is not one msg-id
    "<abc@host.example>\t",
    "\t<abc@host.example>",
    "abc@host.example\t",
]

# These would change a URL path or query, widen a search, or are not mailbox addresses.
BAD_ADDRESSES = [
    "alice@corp.example OR in:anywhere",
    "alice@corp.example in:anywhere",
    "in:anywhere",
    "from:alice@corp.example",
    "alice@corp.example/../../admin",
    "../alice@corp.example",
    "alice/messages@corp.example",
    "alice?$filter=x@corp.example",
    "alice@corp.example?x=1",
    "alice#frag@corp.example",
    "alice%2F@corp.example",
    "alice%40corp.example@corp.example",
    "alice@corp.example%00",
    "alice..b@corp.example",
    "alice@corp..example",
    ".alice@corp.example",
    "alice.@corp.example",
    "alice\\@corp.example",
    '"alice"@corp.example',
    '"a b"@corp.example',
    "alice(x)@corp.example",
    "{alice}@corp.example",
    "alice|bob@corp.example",
    "alice:bob@corp.example",
    "alice@corp.example:443",
    "alice@[127.0.0.1]",
    "alice @corp.example",
    "ali ce@corp.example",
    "alice@corp.example\r\nbcc@evil.example",
    "alice@corp.example\n",
    "alice\x00@corp.example",
    "alice@corp.example\x00",
    "alice\x1b@corp.example",
    "\u0430lice@corp.example",
    "alice@c\u043erp.example",
    "alice@corp\u3002example",
    "alice\u200b@corp.example",
    "alice@localhost",
    "alice",
    "@corp.example",
    "alice@",
    "alice@@corp.example",
    "alice@bob@corp.example",
    "alice@-corp.example",
    "alice@corp-.example",
    "alice@corp_x.example",
    "<alice@corp.example",
    "Alice <alice@corp.example>",
    "%s@corp.example" % ("a" * 65),
    "a@%s.example" % ".".join(["b" * 63] * 4),
    "a@%s.example" % ("b" * 64),
    "alice@corp.example'--",
    "alice'@corp.example'",
    "alice@corp.exa'mple",
    # issue 13, finding 7: wildcards are not one mailbox (they reached a Graph URL and a
    # Google token subject), nor is a value with a tab
    "*@corp.example",
    "**@corp.example",
    "*.*@corp.example",
    " *@corp.example ",
    "alice@corp.example\t",
    "\talice@corp.example",
    "*@*.example",
]


@pytest.mark.parametrize("value", BAD_MESSAGE_IDS)
def test_bad_message_ids_are_refused_naming_the_field(value):
    with pytest.raises(InvalidRequest) as caught:
        validation.message_id(value)
    assert caught.value.field == "message_id"
    assert str(caught.value).startswith("invalid message_id: ")


@pytest.mark.parametrize("value", BAD_ADDRESSES)
def test_bad_addresses_are_refused_naming_the_field(value):
    with pytest.raises(InvalidRequest) as caught:
        validation.address(value)
    assert caught.value.field == "recipients"
    assert "invalid recipients" in str(caught.value)


def test_the_corpus_is_large():
    assert len(BAD_MESSAGE_IDS) + len(BAD_ADDRESSES) >= 100


@pytest.mark.parametrize("value,expected", [
    ("abc@host.example", "<abc@host.example>"),
    ("<abc@host.example>", "<abc@host.example>"),
    ("  <abc@host.example>  ", "<abc@host.example>"),
    ("<a+b=c$d@host>", "<a+b=c$d@host>"),
    ("<o'brien'@host>", "<o'brien'@host>"),
    ("<a/b?c#d%e&f*g^h`i|j~k!l@x.y>", "<a/b?c#d%e&f*g^h`i|j~k!l@x.y>"),
    ("<-lead@x>", "<-lead@x>"),
    ("<CAF=ab+Cd_Q@mail.gmail.com>", "<CAF=ab+Cd_Q@mail.gmail.com>"),
    ("<20240501.1234@[192.0.2.1]>", "<20240501.1234@[192.0.2.1]>"),
    ("<x@[IPv6:2001:db8::1]>", "<x@[IPv6:2001:db8::1]>"),
    ("&lt;abc@host.example&gt;", "<abc@host.example>"),
    ("<mailto:abc@host.example|abc@host.example>", "<abc@host.example>"),
    ("<%s@y>" % ("a" * 994), "<%s@y>" % ("a" * 994)),
])
def test_odd_but_legal_message_ids_are_kept(value, expected):
    assert validation.message_id(value) == expected


def test_message_id_keeps_case():
    assert validation.message_id("<AbC@Host.Example>") == "<AbC@Host.Example>"


@pytest.mark.parametrize("value,expected", [
    ("Alice@Corp.EXAMPLE", "Alice@corp.example"),
    ("o'brien@corp.example", "o'brien@corp.example"),
    ("first.last+tag@corp.example", "first.last+tag@corp.example"),
    ("a!$&*=^_`~-@corp.example", "a!$&*=^_`~-@corp.example"),
    # a '*' among other characters is RFC atext, not a wildcard (issue 13, finding 7)
    ("a*b@corp.example", "a*b@corp.example"),
    ("  alice@corp.example  ", "alice@corp.example"),
    ("alice@xn--bcher-kva.example", "alice@xn--bcher-kva.example"),
    ("<mailto:alice@corp.example|alice@corp.example>", "alice@corp.example"),
    ("<mailto:alice@corp.example>", "alice@corp.example"),
    ("%s@corp.example" % ("a" * 64), "%s@corp.example" % ("a" * 64)),
])
def test_good_addresses(value, expected):
    assert validation.address(value) == expected


def test_a_wildcard_or_a_tab_is_refused_with_its_reason():
    with pytest.raises(InvalidRequest) as caught:
        validation.recipients(["alice@corp.example", "*@corp.example"], 10)
    assert caught.value.field == "recipients"
    assert "is a wildcard, not one mailbox address" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        validation.message_id("<abc@host.example>\t")
    assert caught.value.field == "message_id"
    assert "contains whitespace" in str(caught.value)


def test_slack_mailto_with_different_text_is_refused():
    with pytest.raises(InvalidRequest):
        validation.address("<mailto:alice@corp.example|bob@corp.example>")


def test_error_shows_a_short_escaped_value():
    hostile = "x\r\n" + "A" * 500 + "@y"
    with pytest.raises(InvalidRequest) as caught:
        validation.message_id(hostile)
    text = str(caught.value)
    assert "\r" not in text and "\n" not in text
    assert "\\r\\n" in text
    assert text.endswith("…)")
    assert len(text) < 200
    assert caught.value.value == hostile


def test_error_escapes_lookalikes():
    with pytest.raises(InvalidRequest) as caught:
        validation.address("\u0430lice@corp.example")
    assert "\\u0430lice" in str(caught.value)
    assert "U+0430" in str(caught.value)


# -- recipients ------------------------------------------------------------------------------

def test_recipients_accepts_comma_separated_string_and_dedupes():
    got = validation.recipients("Alice@corp.example, bob@corp.example;alice@CORP.example,", 10)
    assert got == ("Alice@corp.example", "bob@corp.example")


def test_recipients_list_items_may_hold_commas():
    got = validation.recipients(["a@corp.example,b@corp.example", "c@corp.example"], 10)
    assert got == ("a@corp.example", "b@corp.example", "c@corp.example")


@pytest.mark.parametrize("value", [None, "", " , ", [], [""], 42, {"a": 1}, [1]])
def test_recipients_must_name_someone(value):
    with pytest.raises(InvalidRequest) as caught:
        validation.recipients(value, 10)
    assert caught.value.field == "recipients"


def test_recipients_one_bad_item_refuses_the_list():
    with pytest.raises(InvalidRequest) as caught:
        validation.recipients(["ok@corp.example", "bad @corp.example"], 10)
    assert "bad @corp.example" in str(caught.value)


def test_recipients_cap():
    many = ["u%d@corp.example" % i for i in range(11)]
    assert len(validation.recipients(many[:10], 10)) == 10
    with pytest.raises(InvalidRequest) as caught:
        validation.recipients(many, 10)
    assert "limits.max_recipients" in str(caught.value)
    # duplicates do not count against the cap
    assert len(validation.recipients(many[:10] + [m.upper() for m in many[:10]], 10)) == 10


# -- enums, booleans, time, text -------------------------------------------------------------

def test_word_is_case_insensitive_and_names_choices():
    assert validation.word(Destination, " JUNK ", "destination") is Destination.JUNK
    assert validation.word(Disposition, "malicious", "disposition", upper=True) \
        is Disposition.MALICIOUS
    with pytest.raises(InvalidRequest) as caught:
        validation.word(Destination, "junkemail", "destination")
    assert "inbox, junk, trash, soft_delete, hard_delete" in str(caught.value)
    with pytest.raises(InvalidRequest):
        validation.word(Mode, None, "mode")


@pytest.mark.parametrize("value,expected", [
    (True, True), (False, False), ("true", True), ("False", False), ("yes", True),
    ("0", False), (" on ", True)])
def test_boolean(value, expected):
    assert validation.boolean(value, "preview") is expected


@pytest.mark.parametrize("value", ["maybe", 1, None, ""])
def test_boolean_refused(value):
    with pytest.raises(InvalidRequest) as caught:
        validation.boolean(value, "preview")
    assert caught.value.field == "preview"


@pytest.mark.parametrize("value,expected", [
    ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
    ("2024-05-01T12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
    ("2024-05-01 12:30", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
    ("2024-05-01T14:30:00+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
    ("2024-05-01T07:30:00-0500", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
    ("2024-05-01T12:30:00.5Z", datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=timezone.utc)),
    ("2024-05-01T12:30:00.123456789Z",
     datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=timezone.utc)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
    (datetime(2024, 5, 1, 12, 30), datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)),
])
def test_timestamps(value, expected):
    got = validation.timestamp(value)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [
    "yesterday", "2024-13-01T00:00:00Z", "2024-02-30", "2024-05-01T25:00:00Z",
    "2024-05-01T12:30:00+25:00", "2024-05-01T12:30:00Z trailing", 1714566600, "",
    (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()])
def test_bad_timestamps(value):
    with pytest.raises(InvalidRequest) as caught:
        validation.timestamp(value)
    assert caught.value.field == "verdict_time"


def test_free_text():
    assert validation.free_text("  looks bad\n\tsee ticket  ", "comment", 100) == \
        "looks bad\n\tsee ticket"
    assert validation.free_text("   ", "comment", 100) is None
    assert validation.free_text("Ünïcode fine", "comment", 100) == "Ünïcode fine"
    for bad in ("x" * 101, "a\x00b", "a\rb", "a\x1b[2Jb", 5):
        with pytest.raises(InvalidRequest) as caught:
            validation.free_text(bad, "comment", 100)
        assert caught.value.field == "comment"


# -- build_request ---------------------------------------------------------------------------

SETTINGS = load_settings({"limits": {"max_recipients": 5}})


def test_build_request_defaults():
    req = build_request({"message_id": "abc@host.example",
                         "recipients": "alice@corp.example"}, SETTINGS)
    assert req.message_id == "<abc@host.example>"
    assert req.recipients == ("alice@corp.example",)
    assert req.destination is Destination.JUNK
    assert req.mode is Mode.MANUAL and req.trigger is Trigger.ANALYST
    assert req.preview is False and req.provider is None
    assert req.disposition is None and req.verdict_time is None and req.comment is None


def test_build_request_full():
    req = build_request({
        "message_id": "<abc@host.example>", "recipients": ["a@corp.example"],
        "destination": "trash", "mode": "auto", "trigger": "post_delivery",
        "disposition": "malicious", "verdict_time": "2024-05-01T12:00:00Z",
        "comment": "INC-1", "preview": "true", "provider": "google",
        "requested_by": "alice", "skip_already_retracted": True,
    }, SETTINGS)
    assert req.destination is Destination.TRASH
    assert req.mode is Mode.AUTO and req.trigger is Trigger.POST_DELIVERY
    assert req.disposition is Disposition.MALICIOUS
    assert req.verdict_time == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert req.preview is True and req.provider is Provider.GOOGLE
    assert req.comment == "INC-1" and req.requested_by == "alice"


def test_build_request_blank_strings_mean_not_given():
    req = build_request({"message_id": "a@b", "recipients": "x@corp.example",
                         "destination": "", "mode": " ", "provider": "auto",
                         "verdict_time": "", "disposition": None}, SETTINGS)
    assert req.destination is Destination.JUNK and req.mode is Mode.MANUAL
    assert req.provider is None and req.verdict_time is None


def test_build_request_auto_takes_destination_from_disposition():
    req = build_request({"message_id": "a@b", "recipients": "x@corp.example",
                         "mode": "auto", "disposition": "MALICIOUS"}, SETTINGS)
    assert req.destination is Destination.TRASH and req.trigger is Trigger.DISPOSITION
    with pytest.raises(InvalidRequest) as caught:
        build_request({"message_id": "a@b", "recipients": "x@corp.example",
                       "mode": "auto", "disposition": "SPAM"}, SETTINGS)
    assert caught.value.field == "disposition"


def test_build_request_auto_preview_mode_forces_preview():
    settings = load_settings({"auto_retract": {"mode": "preview"}})
    params = {"message_id": "a@b", "recipients": "x@corp.example", "mode": "auto",
              "disposition": "SUSPICIOUS"}
    assert build_request(params, settings).preview is True
    assert build_request(dict(params, mode="manual"), settings).preview is False


@pytest.mark.parametrize("field,value", [
    ("message_id", None), ("message_id", "a b@c"), ("recipients", None),
    ("recipients", "x@y"), ("destination", "purge"), ("mode", "automatic"),
    ("trigger", "manual"), ("disposition", "EVIL"), ("verdict_time", "noon"),
    ("comment", "x" * 1001), ("preview", "perhaps"), ("provider", "yahoo"),
    ("requested_by", "bob\x00"), ("messageid", "a@b"),
])
def test_build_request_names_the_bad_field(field, value):
    params = {"message_id": "a@b", "recipients": "x@corp.example"}
    params[field] = value
    with pytest.raises(InvalidRequest) as caught:
        build_request(params, SETTINGS)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_build_request_caps_recipients_from_config():
    with pytest.raises(InvalidRequest) as caught:
        build_request({"message_id": "a@b",
                       "recipients": ["u%d@corp.example" % i for i in range(6)]}, SETTINGS)
    assert caught.value.field == "recipients"


@pytest.mark.parametrize("value,expected", [
    (None, None), ("", None), (True, True), ("false", False)])
def test_skip_flag(value, expected):
    assert validation.skip_flag({"skip_already_retracted": value}) is expected


def test_skip_flag_refuses_nonsense():
    with pytest.raises(InvalidRequest) as caught:
        validation.skip_flag({"skip_already_retracted": "sometimes"})
    assert caught.value.field == "skip_already_retracted"
