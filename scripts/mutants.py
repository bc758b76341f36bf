"""The hand-written mutants `scripts/mutation.py` runs, and which tests belong to which module.

A mutant is one realistic mistake: `snippet` must occur exactly once in `file` (relative to
src/b24robots), `replacement` is what a careless edit would have written instead, `description` says
what behaviour the mistake breaks. When the code changes, a mutant whose snippet is gone is reported as
not applicable: re-target it to where the code lives now (or drop it when the behaviour went away).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    module: str  # the row of the table (a key of MODULES)
    file: str
    snippet: str
    replacement: str
    description: str


INTAKE = "intake"

# module -> the test files that run for each of its mutants (its own tests; fast ones first, as -x stops early)
MODULES: dict[str, list[str]] = {
    INTAKE: [
        "tests/test_intake_rules.py",
        "tests/test_pipeline_intake.py",
        "tests/test_portal_install.py",
        "tests/test_installations_sync.py",
    ],
    "store/journal.py": [
        "tests/test_store_journal_rules.py",
        "tests/test_store_journal.py",
        "tests/test_store_calls.py",
    ],
    "robots/params.py": [
        "tests/test_robots_params_rules.py",
        "tests/test_robots_types.py",
        "tests/test_robots_spec.py",
    ],
    "jobs/sender.py": [
        "tests/test_sender_batches.py",
        "tests/test_pipeline_delivery.py",
        "tests/test_robot_fires.py",
    ],
    "store/installations.py": [
        "tests/test_store_installations_rules.py",
        "tests/test_store_portal_tokens.py",
        "tests/test_installations_sync.py",
    ],
    "store/portal_tokens.py": [
        "tests/test_store_portal_tokens.py",
        "tests/test_reliability_refresh.py",
        "tests/test_installations_sync.py",
    ],
    "store/limiter_state.py": ["tests/test_store_limiter_state.py"],
    "store/registrations.py": ["tests/test_store_registrations.py", "tests/test_store_installations_rules.py"],
    "rest/client.py": [
        "tests/rest/test_rest_units.py",
        "tests/rest/test_rest_client.py",
        "tests/rest/test_rest_batch.py",
        "tests/rest/test_rest_simulator.py",
    ],
    "rest/limiter.py": ["tests/rest/test_rest_units.py", "tests/rest/test_rest_client.py"],
    "inbound/formcodec.py": ["tests/inbound/test_formcodec.py", "tests/inbound/test_formcodec_properties.py"],
    "store/versioned.py": [
        "tests/test_store_versioned.py",
        "tests/test_store_register.py",
        "tests/test_store_triggers.py",
    ],
}


def _m(module: str, file: str, snippet: str, replacement: str, description: str) -> Mutant:
    return Mutant(module, file, snippet, replacement, description)


_intake = [
    _m(
        INTAKE,
        "web/app.py",
        'if request.headers.get("content-type", "").startswith("application/json"):',
        "if False:",
        "_read_form: JSON app events not refused",
    ),
    _m(
        INTAKE,
        "web/robot_endpoint.py",
        """    if content_type.startswith("application/json"):
        raise FormDecodeError""",
        """    if False:
        raise FormDecodeError""",
        "decode_robot_body: JSON robot calls not refused",
    ),
    _m(
        INTAKE,
        "portal/auth.py",
        "if need_active and not inst.active:",
        "if False:",
        "authenticate: inactive installations accepted",
    ),
    _m(
        INTAKE,
        "portal/auth.py",
        'return Denied(403, "forbidden", "the application token does not match this portal")',
        'return Denied(401, "unauthorized", "the application token does not match this portal")',
        "authenticate: a wrong token answered 401 instead of 403",
    ),
    _m(
        INTAKE,
        "portal/auth.py",
        "if domain and domain != inst.domain:",
        "if False:",
        "authenticate: a renamed portal's new domain not stored",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        'use_subscription=as_flag(_text(form, "use_subscription")) is not False,',
        'use_subscription=_text(form, "use_subscription") != "N",',
        "Intake.accept: 'n' read as Y (case handling)",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        'use_subscription=as_flag(_text(form, "use_subscription")) is not False,',
        'use_subscription=as_flag(_text(form, "use_subscription")) is True,',
        "Intake.accept: missing use_subscription read as N",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        """        if created:
            self.s.deliver_wakeup.notify()
        body: dict[str, Any]""",
        """        body: dict[str, Any]""",
        "Intake._rejected: sender not woken for a bad-input notice",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        'auth_user_id=_int(auth.get("user_id"), 0) or None,',
        "auth_user_id=None,",
        "Intake.accept: the auth user id is dropped",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        "if not code or not token:",
        "if not code:",
        "Intake.accept: a call without event_token stored",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        "if not isinstance(properties, Mapping):",
        "if False:",
        "Intake.accept: a plain-text properties value not refused",
    ),
    _m(
        INTAKE,
        "portal/robot_call.py",
        "caller_token=user_token.access_token if user_token else None,",
        "caller_token=None,",
        "Intake.accept: the run-as user's token not kept for the run",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        """        await self._io(self.registrations.clear, inst.member_id)  # the update deleted them""",
        "",
        "Lifecycle._updated: registrations not cleared on update",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        """        await self._io(self.registrations.clear, inst.member_id)
        log.info("installed on %s (app frame)", inst.domain)""",
        """        log.info("installed on %s (app frame)", inst.domain)""",
        "Lifecycle.frame: registrations not cleared on a frame install",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        "if existing is not None and existing.active:",
        "if existing is not None:",
        "Lifecycle._installed_event: a re-install after uninstall with the same token not stored",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        "fresh = existing is None or not existing.active or existing.has_application_token",
        "fresh = existing is None",
        "Lifecycle._installed_event: a re-install keeps the old registrations",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        """        await self._io(
            self.journal.abandon_portal, found.id, "not run or not answered: the application was uninstalled"
        )""",
        "",
        "Lifecycle._uninstall: waiting invocations survive an uninstall",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        "if claim.clean:",
        "if not claim.clean:",
        "Lifecycle._uninstall: data[CLEAN] read backwards",
    ),
    _m(
        INTAKE,
        "portal/install.py",
        'if value.rpartition("_")[2].startswith("ent"):',
        'if value.startswith("ent"):',
        "is_enterprise: a regional enterprise licence (ru_ent500) not recognised",
    ),
    _m(
        INTAKE,
        "portal/oauth.py",
        'if str(info.get("client_id") or "") != self.client_id:',
        "if False:",
        "OAuthServers._check: foreign application's token accepted",
    ),
    _m(
        INTAKE,
        "portal/oauth.py",
        """            if server is None:
                raise Refused(400, "server_endpoint is not one of the trusted OAuth servers (B24R_OAUTH_SERVERS)")""",
        """            if server is None:
                server = claim.server_endpoint""",
        "OAuthServers.candidates: server_endpoint host not checked (SSRF)",
    ),
    _m(
        INTAKE,
        "portal/oauth.py",
        "if domain != claim.domain:",
        "if False:",
        "OAuthServers._check: claimed domain not compared with the OAuth server's",
    ),
    _m(
        INTAKE,
        "portal/grant.py",
        '("domain", claim.domain), ("application token", claim.application_token)]',
        '("domain", claim.domain)]',
        "claim_from_event: missing application_token accepted",
    ),
]

_journal = [
    _m(
        "store/journal.py",
        "store/entries.py",
        "start = min(float(new.portal_ts), now) if new.portal_ts > 0 else now",
        "start = max(float(new.portal_ts), now) if new.portal_ts > 0 else now",
        "deadline_of: trusts the later clock",
    ),
    _m(
        "store/journal.py",
        "store/journal.py",
        "deliver_after=now if state == DEAD and new.use_subscription else None,",
        "deliver_after=now if state == DEAD else None,",
        "_insert: dead notice owed even without subscription",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        """                    InvocationRow.lease_owner == owner,
                    InvocationRow.state == RUNNING,
                )
                .values(lease_expires_at=now + lease)""",
        """                    InvocationRow.state == RUNNING,
                )
                .values(lease_expires_at=now + lease)""",
        "extend: extends leases of other owners",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "row.deliver_after = now if row.use_subscription and not too_late else None",
        "row.deliver_after = now if row.use_subscription else None",
        "kill: dead notice owed even after the workflow timeout",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "or_(InvocationRow.state.in_((QUEUED, FAILED, RUNNING)), InvocationRow.deliver_after.is_not(None)),",
        "or_(InvocationRow.state.in_((QUEUED, FAILED)), InvocationRow.deliver_after.is_not(None)),",
        "abandon_portal: running invocations survive an uninstall",
    ),
    _m(
        "store/journal.py",
        "store/deliveries.py",
        """                    InstallationRow.status == "active",
""",
        "",
        "portals_owing: uninstalled/needs_reinstall portals still served",
    ),
    _m(
        "store/journal.py",
        "store/deliveries.py",
        ".where(InvocationRow.id.in_(ids), InvocationRow.lease_owner == owner)\n"
        "                .values(\n                    state=case(",
        ".where(InvocationRow.id.in_(ids))\n                .values(\n                    state=case(",
        "delivered: lease ownership not checked",
    ),
    _m(
        "store/journal.py",
        "store/deliveries.py",
        "if final or delivery_gives_up(",
        "if delivery_gives_up(",
        "delivery_failed: a final failure retried",
    ),
    _m(
        "store/journal.py",
        "store/journal.py",
        "if row.state not in (FAILED, DEAD):",
        "if row.state not in (DEAD,):",
        "retry: operator cannot retry a failed invocation",
    ),
    _m(
        "store/journal.py",
        "store/journal.py",
        'row.state, row.run_after, row.error, row.deliver_after = QUEUED, now, "", None',
        'row.state, row.run_after, row.error = QUEUED, now, ""',
        "retry: owed dead notice not cleared on operator retry",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "and_(InvocationRow.state == RUNNING, InvocationRow.lease_expires_at < now),",
        "and_(InvocationRow.state == RUNNING, InvocationRow.lease_expires_at < 0),",
        "claim: an expired lease never comes back",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        """                row.attempts += 1
                row.started_at = now""",
        """                row.started_at = now""",
        "claim: attempts not counted",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "attempts=InvocationRow.attempts - 1,",
        "attempts=InvocationRow.attempts,",
        "release: a released lease costs an attempt",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        """            row.deliver_after = now if row.use_subscription else None
            self._notify(s)
            return True

    def retry_later""",
        """            row.deliver_after = now
            self._notify(s)
            return True

    def retry_later""",
        "finish: an answer owed to a robot that does not wait",
    ),
    _m(
        "store/journal.py",
        "store/deliveries.py",
        """                    or_(InvocationRow.lease_expires_at.is_(None), InvocationRow.lease_expires_at < now),
                )
                .order_by(InvocationRow.deliver_after, InvocationRow.id)""",
        """                )
                .order_by(InvocationRow.deliver_after, InvocationRow.id)""",
        "claim_deliveries: an answer leased twice",
    ),
    _m(
        "store/journal.py",
        "store/journal.py",
        'event_token=f"{src.event_token}#replay{count + 1}",',
        'event_token=f"{src.event_token}#replay{count}",',
        "replay: the second replay of one entry collides",
    ),
    _m(
        "store/journal.py",
        "store/journal.py",
        'return inv.event_token.split("#replay", 1)[0]',
        "return inv.event_token",
        "original_token: a replay answers with its suffixed token",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "if row is None or row.state != RUNNING or row.lease_owner != owner:",
        "if row is None or row.state != RUNNING:",
        "_owned: a lost lease's result still recorded",
    ),
    _m(
        "store/journal.py",
        "store/work_queue.py",
        "row.state, row.run_after, row.error, row.log = FAILED, now + delay, error, log",
        "row.state, row.run_after, row.error, row.log = FAILED, now, error, log",
        "retry_later: the delay is ignored",
    ),
    _m(
        "store/journal.py",
        "store/deliveries.py",
        """                row.lease_owner = row.lease_expires_at = row.lease_process = None
                row.error = f"delivery: {reason}"
""",
        """                row.lease_owner = row.lease_expires_at = row.lease_process = None
                row.error = f"delivery: {reason}"
                row.deliver_attempts += 1
""",
        "delivery_deferred: a deferral counts as an attempt",
    ),
]

_params = [
    _m(
        "robots/params.py",
        "robots/params.py",
        "out[lang.lower()] = text",
        "out[lang] = text",
        "check_text: language keys not lower-cased",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        'for candidate in (lang, "ru" if lang == "ua" else "", "en"):',
        'for candidate in (lang, "", "en"):',
        "localize: ua -> ru fallback lost",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        """        if self.multiple and not isinstance(self.default, list | tuple):
            return [self.default]
""",
        "",
        "default_value: scalar default of a multiple param not wrapped in a list",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "if self.required and self.default is None:",
        "if self.required:",
        "parse: required param with a default raises when missing",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "flag = as_flag(value)",
        'flag = as_flag(value) if value in ("Y", "N", True, False) else None',
        "_flag: lower-case 'y'/'n' refused (case handling)",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "sorted(raw.items(), key=lambda kv: _sort_key(kv[0]))",
        "sorted(raw.items())",
        "_as_list: dict-shaped lists sorted lexicographically ('10' < '2')",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "for base in reversed(cls.__mro__[1:]):",
        "for base in cls.__mro__[1:]:",
        "Params.__init_subclass__: base params merged in wrong MRO order (grandparent overrides parent)",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "if v is not None or p.multiple:",
        "if v is not None:",
        "dump_values: None for a multiple output dropped instead of []",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        'values = [v for v in values if v != ""]',
        "values = list(values)",
        "parse: an empty string is a value, not a missing one",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "if len(parsed) > 1:",
        "if len(parsed) > 2:",
        "parse: two values for a single parameter accepted",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "unknown = sorted(k for k in values if k.lower() not in by_key)",
        "unknown = sorted(k for k in values if k not in by_key)",
        "dump_values: output keys matched case-sensitively",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        """        if self.default is not None:
            try:
                self.dump(self.default)""",
        """        if False:
            try:
                self.dump(self.default)""",
        "Param: a default that does not fit the type accepted at declaration",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        'required=_flag(doc.get("required"), f"parameter {key!r} required"),',
        'required=bool(doc.get("required")),',
        "from_document: required 'N' read as true",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        'KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$", re.IGNORECASE)',
        'KEY_RE = re.compile(r"^[a-z0-9_]+$", re.IGNORECASE)',
        "KEY_RE: a key starting with a digit accepted (the portal refuses it)",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        'prop["Required"] = "Y" if self.required else "N"',
        'prop["Required"] = "Y" if self.required or self.default is not None else "N"',
        "to_property: a parameter with a default declared required",
    ),
    _m(
        "robots/params.py",
        "robots/params.py",
        "return {p.key: p.dump(p.default) for p in params if p.default is not None}",
        "return {p.key: p.dump(p.default) for p in params if p.default}",
        "default_outputs: a falsy default (0, '') not sent",
    ),
]

_sender = [
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        'params["log_message"] = short(inv.log_message)',
        'params["log_message"] = inv.log_message',
        "commands_for: final log message not shortened",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "if installation_id in self._busy or len(self._busy) >= self.concurrency:",
        "if len(self._busy) >= self.concurrency:",
        "run: one portal drained twice concurrently",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "if len(commands) + len(cmds) > BATCH_MAX:",
        "if len(commands) + len(cmds) >= BATCH_MAX:",
        "_send_batch: 49 commands per batch (off by one)",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        'await persist("returning leases", self.journal.unlease, [i.id for i in due[len(packed) :]], self.owner)',
        "pass",
        "_send_batch: overflow answers stay leased (delayed by the lease)",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "delay = delivery_backoff(due[0].deliver_attempts)",
        "delay = 0.0",
        "_send_batch: failed batch retried with no backoff",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "ok = [inv for inv in due if inv.id not in failed]",
        "ok = list(due)",
        "_send_batch: failed commands marked delivered",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "final = isinstance(err, AccessDenied) or (inv_id in calls and not transient)",
        "final = inv_id in calls and not transient",
        "_send_batch: refused token retried 25 times",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "unrun.append(inv.id)  # the batch halted before it: still owed, no attempt spent",
        "pass",
        "_send_batch: commands a halted batch never ran marked delivered",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "late = {i.id for i in invs if i.too_late(now)}",
        "late: set[int] = set()",
        "_send_batch: an answer sent after the workflow's timeout",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "elif isinstance(probe, MethodError) and probe.code == GONE:",
        'elif isinstance(probe, MethodError) and probe.code == "GONE":',
        "_send_batch: an answer to a finished workflow retried until given up",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        'if isinstance(check, MethodError) and check.code == "NOT_FOUND":',
        "if False:",
        "_send_batch: a fire at a missing entity retried instead of failing",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "transient = isinstance(err, QueryLimitExceeded | OperationTimeLimit | ServerError | TransportError)",
        "transient = False",
        "_send_batch: a call hit by the rate limit given up at once",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "                delay=LOCKED_WORKFLOW_DELAY,",
        "                delay=0.0,",
        "_send_batch: a locked workflow hammered with no delay",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        """            if more:
                self._again.append(installation_id)""",
        "",
        "_drain: the next batch of a backlog waits for the next look (the poll interval)",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "        if more and room >= 2:",
        "        if False:",
        "_send_batch: the room one-command calls left in a batch goes unused",
    ),
    _m(
        "jobs/sender.py",
        "jobs/sender.py",
        "known = await asyncio.to_thread(self.journal.portals_owing, limit=OWING_LOOK)",
        "known = await asyncio.to_thread(self.journal.portals_owing, limit=10)",
        "run: portals beyond the ten longest-waiting starve",
    ),
]

_installations = [
    _m(
        "store/installations.py",
        "store/installations.py",
        """            row.access_token_enc = ""
            row.refresh_token_enc = \"\"""",
        "",
        "uninstall: tokens kept at rest",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        """            s.execute(delete(RegistrationRow).where(RegistrationRow.installation_id == row.id))

    def forget_data""",
        """
    def forget_data""",
        "uninstall: registrations not forgotten",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        "select(InstallationRow).where((InstallationRow.member_id == key) | (InstallationRow.domain == key))",
        "select(InstallationRow).where(InstallationRow.member_id == key)",
        "get: lookup by domain lost",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        """            if grant.application_token:
                row.application_token_hash = self.vault.digest(grant.application_token)""",
        """            row.application_token_hash = self.vault.digest(grant.application_token)""",
        "install: an empty application token overwrites the stored one",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        """            if grant.language:
                row.language = grant.language""",
        """            row.language = grant.language""",
        "install: a grant without a language forgets the known one",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        "row.token_version = (row.token_version or 0) + 1",
        "row.token_version = row.token_version or 1",
        "install: a refresh of the old pair overwrites the re-installed tokens",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        "if row.limits_manual or (row.rate == rate and row.burst == burst):",
        "if row.rate == rate and row.burst == burst:",
        "apply_plan_limits: limits set by hand overridden by the plan",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        """            if row.domain == domain and row.client_endpoint == client_endpoint:
                return False""",
        """            if row.domain == domain:
                return False""",
        "relocate: a moved endpoint on the same domain not stored",
    ),
    _m(
        "store/installations.py",
        "store/installations.py",
        """            if inst.active:  # an inactive installation is refused: never from memory""",
        """            if True:""",
        "verify: an inactive installation remembered as accepted",
    ),
]

_portal_tokens = [
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "if row.status == NEEDS_REINSTALL:",
        "if False:",
        "load: needs_reinstall portals still called",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "row.domain = netloc_of(client_endpoint) or row.domain  # host with its port",
        "pass",
        "update_endpoint: domain not updated on a portal move",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "status=case((InstallationRow.status == NEEDS_REINSTALL, ACTIVE), else_=InstallationRow.status),",
        "status=InstallationRow.status,",
        "swap: a valid refreshed pair does not end needs_reinstall",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "InstallationRow.member_id == portal_key, InstallationRow.status != UNINSTALLED",
        "InstallationRow.member_id == portal_key",
        "mark_needs_reinstall: an uninstalled portal marked needs_reinstall",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "                        InstallationRow.refresh_until < now,",
        "                        InstallationRow.refresh_until < 0,",
        "claim_refresh: a crashed refresher's claim never expires",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "if row.status == UNINSTALLED:",
        "if False:",
        "load: an uninstalled portal still called",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "stmt = stmt.where(InstallationRow.token_version == version)",
        "pass",
        "mark_needs_reinstall: the loser of a refresh race locks out the winner's pair",
    ),
    _m(
        "store/portal_tokens.py",
        "store/portal_tokens.py",
        "InstallationRow.member_id == portal_key, InstallationRow.refresh_holder == holder",
        "InstallationRow.member_id == portal_key",
        "release_refresh: another holder's claim released",
    ),
]

_limiter_state = [
    _m(
        "store/limiter_state.py",
        "store/limiter_state.py",
        "new_tat, wait = gcra_take(tat, clock(), stored_rate or rate, stored_burst or burst)",
        "new_tat, wait = gcra_take(tat, clock(), rate, burst)",
        "take: the stored rate limit ignored",
    ),
    _m(
        "store/limiter_state.py",
        "store/limiter_state.py",
        "                s.execute(row.values(limiter_tat=new_tat))",
        "                pass",
        "take: a taken slot not stored (every process sees an empty bucket)",
    ),
    _m(
        "store/limiter_state.py",
        "store/limiter_state.py",
        "full = gcra_full(tat, now, stored_rate or rate, stored_burst or burst)",
        "full = gcra_full(tat, now, rate, burst)",
        "backoff: the stored rate limit ignored",
    ),
]

_registrations = [
    _m(
        "store/registrations.py",
        "store/registrations.py",
        """                if reg is not None:
                    s.delete(reg)""",
        """                pass""",
        "record: a forgotten registration kept",
    ),
    _m(
        "store/registrations.py",
        "store/registrations.py",
        """                s.add(reg)
            reg.kind, reg.fingerprint, reg.registered_at = kind, fingerprint, time.time()""",
        """                s.add(reg)
                reg.kind, reg.fingerprint, reg.registered_at = kind, fingerprint, time.time()""",
        "record: a changed registration keeps its old fingerprint",
    ),
    _m(
        "store/registrations.py",
        "store/registrations.py",
        "regs = s.scalars(select(RegistrationRow).where(RegistrationRow.installation_id == row.id))",
        "regs = s.scalars(select(RegistrationRow))",
        "of: another portal's registrations read as this one's",
    ),
    _m(
        "store/registrations.py",
        "store/registrations.py",
        "            s.execute(delete(RegistrationRow).where(RegistrationRow.installation_id == row.id))",
        "            s.execute(delete(RegistrationRow))",
        "clear: every portal's registrations forgotten",
    ),
]

_client = [
    _m(
        "rest/client.py",
        "rest/client.py",
        "if env.next <= start:",
        "if env.next < start:",
        "list_all: non-advancing next loops forever",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        "if waited or wait is None or wait > self._retry.max_operation_wait:",
        "if waited or wait is None:",
        "_request: OPERATION_TIME_LIMIT waits without bound",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        "chunk = items[start : start + BATCH_MAX]",
        "chunk = items[start : start + BATCH_MAX - 1]",
        "batch: a chunk drops its 50th command",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        'return name in _IDEMPOTENT or name.endswith((".list", ".get"))',
        "return name in _IDEMPOTENT",
        "is_idempotent: reads not retried after a 5xx",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        'return bool(inner) and all(n.lower() != "batch" and is_idempotent(n) for n in inner)',
        "return bool(inner)",
        "is_idempotent: a batch with a write retried after an unknown outcome",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        "return await send(portal_key, fresh, method, params)",
        "return await send(portal_key, pair, method, params)",
        "_attempt: the call replayed with the stale token after a refresh",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        """            await self._sleep(wait + _LIMIT_MARGIN)

        started""",
        """            break

        started""",
        "_send: the limiter's wait ignored",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        """            if redirected:
                raise TransportError("TOO_MANY_REDIRECTS\"""",
        """            if False:
                raise TransportError("TOO_MANY_REDIRECTS\"""",
        "_send: redirects followed without a bound",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        "            await in_thread(self._tokens.update_endpoint, portal_key, new_endpoint)\n",
        "",
        "_send: a moved portal's endpoint not stored",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        'if parsed.scheme == "http" and parsed.host and self._allow_http:',
        'if parsed.scheme == "http" and parsed.host:',
        "_checked_url: plain http endpoints allowed",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        """            if halt and any(k in out.errors for k, _, _ in chunk):
                break""",
        """            if False:
                break""",
        "batch: with halt, the next chunk sent after an error",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        "await in_thread(self._limiter.backoff, portal_key, self._clock(), rate, burst)",
        "pass",
        "_send: a QUERY_LIMIT_EXCEEDED not recorded in the shared bucket",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        "                self.reset_at[(portal_key, method.lower())] = float(reset_at)",
        "                pass",
        "_send: operating_reset_at not remembered",
    ),
    _m(
        "rest/client.py",
        "rest/client.py",
        'next=as_int(body.get("next")),',
        "next=None,",
        "call_envelope: paging next lost",
    ),
    _m(
        "rest/client.py",
        "rest/transport.py",
        'content = json.dumps({**params, "auth": pair.access_token}, ensure_ascii=False)',
        'content = json.dumps({"auth": pair.access_token, **params}, ensure_ascii=False)',
        "_send: a caller's 'auth' parameter replaces the access token",
    ),
]

_limiter = [
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        """        with self._lock:
            new_tat, wait = gcra_take(""",
        """        if True:
            new_tat, wait = gcra_take(""",
        "MemoryLimiterState.take: lock dropped",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "or not math.isfinite(rate) or rate <= 0:",
        "or not math.isfinite(rate) or rate < 0:",
        "check_rate: a rate of 0 accepted",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "or burst < 1:",
        "or burst < 0:",
        "check_rate: a burst of 0 accepted",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "or not math.isfinite(rate) or rate <= 0:",
        "or rate <= 0:",
        "check_rate: an infinite rate accepted",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "if isinstance(rate, bool) or not isinstance(rate, int | float)",
        "if not isinstance(rate, int | float)",
        "check_rate: True accepted as a rate",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "return max(tat, now + burst / rate)",
        "return max(tat, now + (burst - 1) / rate)",
        "gcra_full: a refused bucket counted one slot short of full",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "wait = max(tat, now) + interval - burst * interval - now",
        "wait = max(tat, now) + interval - (burst + 1) * interval - now",
        "gcra_wait: one request over the burst let through",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "    return wait if wait > 0 else 0.0",
        "    return wait",
        "gcra_wait: negative waits returned",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        """    if wait > 0:
        return tat, wait""",
        """    if wait > 0:
        return tat + 1.0 / rate, wait""",
        "gcra_take: a waiter takes a slot as well",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "return max(tat, now + slack) + 1.0 / rate, 0.0",
        "return max(tat, now) + 1.0 / rate, 0.0",
        "gcra_take: the arrival slack ignored",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "return max(tat, now + burst / rate)",
        "return now + burst / rate",
        "gcra_full: a refusal moves the bucket back",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        """    check_rate(rate, burst)
    interval = 1.0 / rate""",
        """    interval = 1.0 / rate""",
        "gcra_wait: invalid limits not refused",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "            self._tats[portal] = new_tat\n",
        "",
        "MemoryLimiterState.take: the slot not stored",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "self._tats[portal] = gcra_full(self._tats.get(portal, 0.0), now, rate, burst)",
        "gcra_full(self._tats.get(portal, 0.0), now, rate, burst)",
        "MemoryLimiterState.backoff: the refusal not recorded",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        """        with self._lock:
            return self._tats.get(portal, 0.0)""",
        """        with self._lock:
            return 0.0""",
        "MemoryLimiterState.tat: the stored time not reported",
    ),
    _m(
        "rest/limiter.py",
        "rest/limiter.py",
        "gcra_take(self._tats.get(portal, 0.0), clock(), rate, burst)",
        "gcra_take(max(self._tats.values(), default=0.0), clock(), rate, burst)",
        "MemoryLimiterState.take: every portal shares one bucket",
    ),
]

_formcodec = [
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if not digits or len(digits) > 19 or not digits.isascii() or not digits.isdigit():",
        "if not digits or len(digits) > 18 or not digits.isascii() or not digits.isdigit():",
        "_as_index: 19-digit integer keys no longer indices (off-by-one)",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        'if digits[0] == "0" and (len(key) > 1):',
        'if digits[0] == "0" and (len(digits) > 1):',
        "_as_index: '-0' read as the integer 0",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "return value if _INT64_MIN <= value <= _INT64_MAX else None",
        "return value if value <= _INT64_MAX else None",
        "_as_index: a key below the int64 range read as an integer",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if index is not None and (self.next_index is None or index >= self.next_index):",
        "if index is not None and (self.next_index is None or index > self.next_index):",
        "_Node.put: [] after an explicit index overwrites it",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        'raw = raw.replace(b"+", b" ")',
        "raw = raw",
        "_prepare: '+' not read as a space (PHP's urldecode reads it so)",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if name and open_at < 0:",
        "if open_at < 0:",
        "_Tree.assign: a pair with an empty name kept",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if depth > self.limits.max_depth:",
        "if depth >= self.limits.max_depth:",
        "_Tree.assign: max_depth one too strict",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if index >= self.limits.max_list_length:",
        "if index > self.limits.max_list_length:",
        "_append_key: one append over max_list_length accepted",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        'raw = a2b_qp(raw.replace(b"=", b"=3D").replace(b"%", b"="))',
        'raw = a2b_qp(raw.replace(b"%", b"="))',
        "_unescape: a literal '=' next to an escape misread",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if index is None or not 0 <= index < size:",
        "if index is None or not index < size:",
        "_is_run: negative keys counted as a list run",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        "if count > limits.max_keys:",
        "if count >= limits.max_keys:",
        "decode_form: max_keys one too strict",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        'chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.") else',
        'chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.~") else',
        "_quote: '~' not escaped as PHP urlencode does",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        '_KEPT = re.compile(r"[A-Za-z0-9_.\\-]*")',
        '_KEPT = re.compile(r"[A-Za-z0-9_.\\-~]*")',
        "_quote: a value of plain characters and '~' sent unescaped",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        """    if isinstance(value, bool):  # before int: bool is an int subclass
        return "1" if value else "0"
""",
        "",
        "_scalar: True encoded as 'True'",
    ),
    _m(
        "inbound/formcodec.py",
        "inbound/formcodec.py",
        """if pos >= size or name[pos] != "[":""",
        """if pos >= size:""",
        "_Tree.assign: text after a closing bracket read as another group",
    ),
]

_versioned = [
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "version.number = (latest or 0) + 1",
        "version.number = (latest or 0) + 2",
        "append: version numbers skip one",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "if activate or document.active_version == 0:",
        "if activate:",
        "append: a first version saved unactivated leaves the document without an active version",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "if document is None or (document.state == DELETED and not deleted):",
        "if document is None:",
        "find: a deleted document still found",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "document.state == DELETED or active is None",
        "active is None",
        "unchanged: saving a deleted document again with its old content does not revive it",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        ".where(self._number == self._doc_active, self._doc_state == ACTIVE, *where)",
        ".where(self._number == self._doc_active, *where)",
        "live: disabled and deleted documents still run",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "query = select(self.versions).where(self.owner == document_id).order_by(self._number)",
        "query = select(self.versions).where(self.owner == document_id)",
        "history: versions not in order",
    ),
    _m(
        "store/versioned.py",
        "store/versioned.py",
        "json.dumps(content, sort_keys=True, ensure_ascii=False)",
        "json.dumps(content, sort_keys=True)",
        "content_hash: the encoding changed, so stored hashes no longer match",
    ),
]

MUTANTS: list[Mutant] = [
    *_intake,
    *_journal,
    *_params,
    *_sender,
    *_installations,
    *_portal_tokens,
    *_limiter_state,
    *_registrations,
    *_client,
    *_limiter,
    *_formcodec,
    *_versioned,
]
