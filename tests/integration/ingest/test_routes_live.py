"""The unit suites of the ingest routes, re-run against the real Cassandra and Kafka.

Each test below is the unit test of the same name; here `h` is a LiveHarness (conftest.py):
Cassandra stores, the confluent-kafka publisher (acks=all), and `published()` reading Kafka.
Tests that need a fake to fail, or their own settings, stay unit-only; their real-stack
counterparts are in test_failures_live.py.
"""

from __future__ import annotations

import pytest

from tests.unit.ingest.test_auth import (
    test_a_deleted_apps_keys_stop_working,
    test_a_valid_secret_with_another_app_id_is_401,
    test_data_key_of_app_a_cannot_reach_app_b_messages,
    test_deactivated_keys_are_401_at_once_on_this_replica,
    test_deactivation_elsewhere_takes_effect_within_the_cache_ttl,
    test_key_kinds_are_not_interchangeable,
    test_malformed_forged_or_unknown_credentials_are_401,
    test_owner_x_cannot_reach_owner_y_apps_keys_or_messages,
    test_unknown_message_ids_are_404,
)
from tests.unit.ingest.test_control import (
    carol,
    test_a_new_app_has_no_data_keys,
    test_create_a_data_key_and_list_it,
    test_create_an_app_and_get_it_back,
    test_create_then_deactivate_a_control_key,
    test_delete_leaves_none,
    test_http_authorization_value_is_never_returned,
    test_list_control_keys_includes_the_current_one,
    test_list_shows_exactly_the_one_created,
    test_rotate_signing_secret_keeps_the_old_one_for_the_grace,
    test_update_description,
    test_usage_per_day,
)
from tests.unit.ingest.test_messages import (
    test_abort_just_before_the_guard_wins,
    test_abort_of_a_finished_message_is_409,
    test_abort_queued_message_via_dashboard,
    test_abort_ready_message,
    test_abort_within_the_guard_is_too_late,
    test_bad_list_parameters,
    test_list_is_newest_first_filtered_and_paged,
    test_redrive_failed_message,
    test_redrive_of_anything_but_failed_is_409,
)
from tests.unit.ingest.test_protection import (
    test_openapi_describes_every_route,
    test_unknown_routes_and_methods_are_json,
)
from tests.unit.ingest.test_schedule import (
    test_a_repeated_idempotency_key_within_one_batch_makes_one_message,
    test_alias_route,
    test_bad_input_is_refused_and_nothing_is_written,
    test_batch_has_per_item_results_in_order,
    test_falsy_and_scalar_payloads_are_accepted_verbatim,
    test_idempotency_key_gives_the_same_id_and_one_message,
    test_malformed_bodies,
    test_schedule_publishes_then_records_ready,
    test_send_at_is_normalised_to_utc,
    test_usage_counts_ingested,
)

pytestmark = pytest.mark.integration

__all__ = [
    "carol",
    "test_a_deleted_apps_keys_stop_working",
    "test_a_new_app_has_no_data_keys",
    "test_a_repeated_idempotency_key_within_one_batch_makes_one_message",
    "test_a_valid_secret_with_another_app_id_is_401",
    "test_abort_just_before_the_guard_wins",
    "test_abort_of_a_finished_message_is_409",
    "test_abort_queued_message_via_dashboard",
    "test_abort_ready_message",
    "test_abort_within_the_guard_is_too_late",
    "test_alias_route",
    "test_bad_input_is_refused_and_nothing_is_written",
    "test_bad_list_parameters",
    "test_batch_has_per_item_results_in_order",
    "test_create_a_data_key_and_list_it",
    "test_create_an_app_and_get_it_back",
    "test_create_then_deactivate_a_control_key",
    "test_data_key_of_app_a_cannot_reach_app_b_messages",
    "test_deactivated_keys_are_401_at_once_on_this_replica",
    "test_deactivation_elsewhere_takes_effect_within_the_cache_ttl",
    "test_delete_leaves_none",
    "test_falsy_and_scalar_payloads_are_accepted_verbatim",
    "test_http_authorization_value_is_never_returned",
    "test_idempotency_key_gives_the_same_id_and_one_message",
    "test_key_kinds_are_not_interchangeable",
    "test_list_control_keys_includes_the_current_one",
    "test_list_is_newest_first_filtered_and_paged",
    "test_list_shows_exactly_the_one_created",
    "test_malformed_bodies",
    "test_malformed_forged_or_unknown_credentials_are_401",
    "test_openapi_describes_every_route",
    "test_owner_x_cannot_reach_owner_y_apps_keys_or_messages",
    "test_redrive_failed_message",
    "test_redrive_of_anything_but_failed_is_409",
    "test_rotate_signing_secret_keeps_the_old_one_for_the_grace",
    "test_schedule_publishes_then_records_ready",
    "test_send_at_is_normalised_to_utc",
    "test_unknown_message_ids_are_404",
    "test_unknown_routes_and_methods_are_json",
    "test_update_description",
    "test_usage_counts_ingested",
    "test_usage_per_day",
]
