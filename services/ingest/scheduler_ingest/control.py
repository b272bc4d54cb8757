"""The control plane: applications, data keys, control keys, signing secrets and usage.

Every operation takes the authenticated owner; an application of another owner (or a deleted
one) is answered exactly like a missing one (404 app_not_found), so ids of other tenants cannot
be probed.
"""

from __future__ import annotations

import dataclasses
import secrets

from scheduler.clock import Clock
from scheduler.domain.policy import DEFAULT_POLICY, DeliveryPolicy, PolicyError
from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.security import SecretHasher, new_signing_secret
from scheduler.settings import KafkaSettings
from scheduler.store.apps import AppStore, ControlKey, DataKey, new_control_key, new_data_key
from scheduler.store.ports import Application
from scheduler.store.usage import UsageDay, UsageStore, usage_day
from scheduler_ingest.auth import Authenticator, ControlPrincipal
from scheduler_ingest.destinations import TOPIC_CHECK_TIMEOUT_S, TopicCheckError, TopicDirectory
from scheduler_ingest.errors import ApiError
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.models import (
    AppCreated,
    ApplicationCreate,
    ApplicationUpdate,
    AppSaved,
    AppType,
    AppView,
    DeliveryPolicyBody,
    EndpointError,
    KeyCreated,
    KeyView,
    SendBackFormat,
    check_kafka_endpoint,
    check_rest_endpoint,
)
from scheduler_ingest.settings import IngestSettings

# The failure destination's refusals, told apart from the app endpoint's.
_FAILURE_TOKENS = {
    "invalid_endpoint": "invalid_failure_endpoint",
    "unknown_topic": "unknown_failure_topic",
}


def app_not_found() -> ApiError:
    return ApiError(404, "app_not_found", "no such application")


def last_control_key() -> ApiError:
    return ApiError(
        409,
        "last_control_key",
        "this is the owner's last active control key: deactivating it would lock the owner"
        " out; create another control key first",
    )


def new_app_id() -> str:
    return "app_" + secrets.token_hex(10)


def app_view(app: Application) -> AppView:
    return AppView(
        id=app.app_id,
        name=app.name,
        type=AppType(app.type),
        endpoint=app.endpoint,
        description=app.description,
        httpAuthorization=(
            {"headerName": app.auth_header_name} if app.auth_header_name is not None else None
        ),
        sendBackFormat=SendBackFormat(app.send_back_format),
        deliveryPolicy=app.policy.to_json(),
        deliveriesPaused=app.deliveries_paused,
        failureDestination=(
            {"type": app.failure_type, "endpoint": app.failure_endpoint}
            if app.failure_type is not None and app.failure_endpoint is not None
            else None
        ),
        created=format_rfc3339_ms(app.created_ms),
        updated=format_rfc3339_ms(app.updated_ms),
    )


def _policy(body: DeliveryPolicyBody | None) -> DeliveryPolicy:
    if body is None:
        return DEFAULT_POLICY
    try:
        return DeliveryPolicy.from_json(body.model_dump(exclude_none=True)).validated()
    except PolicyError as exc:
        raise ApiError(400, "invalid_delivery_policy", str(exc)) from None


def key_view(key: ControlKey | DataKey) -> KeyView:
    return KeyView(id=key.key_id, created=format_rfc3339_ms(key.created_ms), active=key.active)


class ControlService:
    def __init__(
        self,
        *,
        store: AppStore,
        usage: UsageStore,
        hasher: SecretHasher,
        auth: Authenticator,
        clock: Clock,
        kafka: KafkaSettings,
        settings: IngestSettings,
        io: BlockingIo,
        destinations: TopicDirectory,
    ) -> None:
        self._store = store
        self._usage = usage
        self._hasher = hasher
        self._auth = auth
        self._clock = clock
        self._kafka = kafka
        self._settings = settings
        self._io = io
        self._destinations = destinations

    # -- applications ---------------------------------------------------------------------------

    async def owned_app(self, who: ControlPrincipal, app_id: str) -> Application:
        app = await self._io(self._store.get_app, app_id)
        if app is None or app.owner_id != who.owner_id or app.deleted_ms is not None:
            raise app_not_found()
        return app

    def _check_endpoint(self, app_type: str, endpoint: str) -> None:
        try:
            if app_type == AppType.REST:
                check_rest_endpoint(endpoint)
            else:
                check_kafka_endpoint(
                    endpoint, self._kafka.topic_prefix, self._settings.kafka_endpoint_prefixes
                )
        except EndpointError as exc:
            raise ApiError(400, "invalid_endpoint", str(exc)) from None

    async def _check_destination(self, app_type: str, endpoint: str) -> list[str]:
        """A KAFKA app's topic must exist (the dispatcher creates none). Returns the warnings of
        what the operator allows anyway (SCHEDULER_INGEST_ALLOW_MISSING_KAFKA_TOPICS)."""
        self._check_endpoint(app_type, endpoint)
        if app_type != AppType.KAFKA:
            return []
        allow = self._settings.allow_missing_kafka_topics
        try:
            exists = await self._io(self._destinations.exists, endpoint, TOPIC_CHECK_TIMEOUT_S)
        except TopicCheckError as exc:
            if allow:
                return [f"Kafka topic {endpoint!r} could not be checked ({exc})"]
            raise ApiError(
                503,
                "unavailable",
                f"could not check that Kafka topic {endpoint!r} exists ({exc}); nothing was"
                " saved, retry",
                {"Retry-After": str(self._settings.retry_after_s)},
            ) from None
        if exists:
            return []
        missing = (
            f"Kafka topic {endpoint!r} does not exist: create it first (messages to a missing"
            " topic fail at once)"
        )
        if allow:
            return [f"{missing}; saved anyway (SCHEDULER_INGEST_ALLOW_MISSING_KAFKA_TOPICS)"]
        raise ApiError(400, "unknown_topic", missing)

    async def _check_failure_destination(self, app_type: str, endpoint: str) -> list[str]:
        """As `_check_destination`, with tokens of its own (`invalid_failure_endpoint`,
        `unknown_failure_topic`): a client (the console) tells which endpoint was refused."""
        try:
            warnings = await self._check_destination(app_type, endpoint)
        except ApiError as exc:
            if exc.status != 400:
                raise
            renamed = _FAILURE_TOKENS.get(exc.token, exc.token)
            raise ApiError(400, renamed, f"failureDestination: {exc.message}") from None
        return [f"failureDestination: {w}" for w in warnings]

    async def create_app(self, who: ControlPrincipal, body: ApplicationCreate) -> AppCreated:
        warnings = await self._check_destination(body.type, body.endpoint)
        policy = _policy(body.deliveryPolicy)
        failure = body.failureDestination
        if failure is not None:
            warnings += await self._check_failure_destination(failure.type, failure.endpoint)
        now = self._clock.now_ms()
        auth = body.httpAuthorization
        app = Application(
            app_id=new_app_id(),
            owner_id=who.owner_id,
            name=body.name,
            type=body.type.value,
            endpoint=body.endpoint,
            description=body.description,
            auth_header_name=auth.headerName if auth else None,
            auth_header_value=auth.headerValue if auth else None,
            send_back_format=body.sendBackFormat.value,
            signing_secret=new_signing_secret(),
            created_ms=now,
            updated_ms=now,
            policy=policy,
            failure_type=failure.type.value if failure else None,
            failure_endpoint=failure.endpoint if failure else None,
        )
        await self._io(self._store.put_app, app)
        return AppCreated(
            **app_view(app).model_dump(), warnings=warnings, signingSecret=app.signing_secret
        )

    async def list_apps(self, who: ControlPrincipal) -> list[AppView]:
        apps = await self._io(self._store.apps, who.owner_id)
        return [app_view(a) for a in apps]

    async def update_app(
        self, who: ControlPrincipal, app_id: str, body: ApplicationUpdate
    ) -> AppSaved:
        app = await self.owned_app(who, app_id)
        given = body.model_fields_set
        changes: dict[str, object] = {}
        warnings: list[str] = []
        if "name" in given and body.name is not None:
            changes["name"] = body.name
        if "description" in given:
            changes["description"] = body.description
        if "endpoint" in given and body.endpoint is not None:
            warnings = await self._check_destination(app.type, body.endpoint)
            changes["endpoint"] = body.endpoint
        if "httpAuthorization" in given:
            auth = body.httpAuthorization
            changes["auth_header_name"] = auth.headerName if auth else None
            changes["auth_header_value"] = auth.headerValue if auth else None
        if "sendBackFormat" in given and body.sendBackFormat is not None:
            changes["send_back_format"] = body.sendBackFormat.value
        if "deliveryPolicy" in given:
            changes["policy"] = _policy(body.deliveryPolicy)
        if "failureDestination" in given:
            failure = body.failureDestination
            if failure is not None:
                warnings += await self._check_failure_destination(failure.type, failure.endpoint)
            changes["failure_type"] = failure.type.value if failure else None
            changes["failure_endpoint"] = failure.endpoint if failure else None
        updated = dataclasses.replace(app, **changes, updated_ms=self._clock.now_ms())  # type: ignore[arg-type]
        await self._io(self._store.put_app, updated)
        return AppSaved(**app_view(updated).model_dump(), warnings=warnings)

    async def delete_app(self, who: ControlPrincipal, app_id: str) -> None:
        """Tombstone the app (its pending messages are aborted lazily at release and fire time)
        and deactivate its data keys."""
        app = await self.owned_app(who, app_id)
        now = self._clock.now_ms()
        await self._io(
            self._store.put_app, dataclasses.replace(app, deleted_ms=now, updated_ms=now)
        )
        for key in await self._io(self._store.data_keys, app_id):
            if key.active:
                await self._io(self._store.deactivate_data_key, app_id, key.key_id)
        self._auth.forget_data_keys(lambda p: p.app_id == app_id)

    async def set_deliveries_paused(
        self, who: ControlPrincipal, app_id: str, paused: bool
    ) -> Application:
        """Pause or resume the app's deliveries: due messages wait while paused (never failed);
        the dispatchers see the change within their app cache's TTL (1 s)."""
        await self.owned_app(who, app_id)
        await self._io(self._store.set_deliveries_paused, app_id, paused, self._clock.now_ms())
        return await self.owned_app(who, app_id)

    async def rotate_signing_secret(self, who: ControlPrincipal, app_id: str) -> dict[str, object]:
        app = await self.owned_app(who, app_id)
        now = self._clock.now_ms()
        until = now + self._settings.signing_secret_grace_ms
        rotated = dataclasses.replace(
            app,
            signing_secret=new_signing_secret(),
            previous_signing_secret=app.signing_secret,
            previous_secret_valid_until_ms=until,
            updated_ms=now,
        )
        await self._io(self._store.put_app, rotated)
        return {
            "signingSecret": rotated.signing_secret,
            "previousSecretValidUntil": format_rfc3339_ms(until),
        }

    async def usage(
        self, who: ControlPrincipal, app_id: str, from_day: int | None, to_day: int | None
    ) -> list[UsageDay]:
        await self.owned_app(who, app_id)
        today = usage_day(self._clock.now_ms())
        last = today if to_day is None else to_day
        first = last - self._settings.usage_default_days + 1 if from_day is None else from_day
        if first > last or last - first > 366:
            raise ApiError(400, "invalid_parameter", "from..to must be at most 366 days, in order")
        return await self._io(self._usage.read, app_id, first, last)

    # -- data keys ------------------------------------------------------------------------------

    async def create_data_key(self, who: ControlPrincipal, app_id: str) -> KeyCreated:
        await self.owned_app(who, app_id)
        secret, key = new_data_key(app_id, who.owner_id, self._clock.now_ms())
        await self._io(self._store.add_data_key, key, self._hasher.hash(secret))
        return KeyCreated(id=key.key_id, secret=secret)

    async def list_data_keys(self, who: ControlPrincipal, app_id: str) -> list[KeyView]:
        await self.owned_app(who, app_id)
        return [key_view(k) for k in await self._io(self._store.data_keys, app_id)]

    async def deactivate_data_key(self, who: ControlPrincipal, app_id: str, key_id: str) -> None:
        await self.owned_app(who, app_id)
        if not await self._io(self._store.deactivate_data_key, app_id, key_id):
            raise ApiError(404, "not_found", "no such data key in this application")
        self._auth.forget_data_keys(lambda p: p.key_id == key_id)

    # -- control keys ---------------------------------------------------------------------------

    async def create_control_key(self, who: ControlPrincipal) -> KeyCreated:
        secret, key = new_control_key(who.owner_id, self._clock.now_ms())
        await self._io(self._store.add_control_key, key, self._hasher.hash(secret))
        return KeyCreated(id=key.key_id, secret=secret)

    async def list_control_keys(self, who: ControlPrincipal) -> list[KeyView]:
        return [key_view(k) for k in await self._io(self._store.control_keys, who.owner_id)]

    async def deactivate_control_key(self, who: ControlPrincipal, key_id: str) -> None:
        """409 last_control_key for the owner's last active key: without one, nobody could
        create another (only an operator, with the CLI). Another owner's key id is simply not
        found. Two concurrent deactivations of an owner's last two keys can both pass."""
        keys = await self._io(self._store.control_keys, who.owner_id)
        active = [k.key_id for k in keys if k.active]
        if active == [key_id]:
            raise last_control_key()
        if not await self._io(self._store.deactivate_control_key, who.owner_id, key_id):
            raise ApiError(404, "not_found", "no such control key for this owner")
        self._auth.forget_control_keys(lambda p: p.key_id == key_id)
