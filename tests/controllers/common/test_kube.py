"""The pure parts of the API client: paths and the drift check."""

from __future__ import annotations

from controllers.common.kube import is_subset, path


def test_paths_for_core_grouped_and_cluster_scoped_kinds():
    assert path("v1", "Service", "ns", "a") == "/api/v1/namespaces/ns/services/a"
    assert path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert path("v1", "Node") == "/api/v1/nodes"
    assert (path("serving.recop.dev/v1alpha1", "RecModel", "ns", "m", "status")
            == "/apis/serving.recop.dev/v1alpha1/namespaces/ns/recmodels/m/status")


def test_subset_ignores_server_added_fields_and_compares_quantities_by_value():
    desired = {"spec": {"replicas": 2, "resources": {"memory": "1024Mi"}, "ports": [{"port": 1}]}}
    live = {"spec": {"replicas": 2, "resources": {"memory": "1Gi"},
                     "ports": [{"port": 1, "protocol": "TCP"}], "revisionHistoryLimit": 10},
            "status": {}}
    assert is_subset(desired, live)
    assert not is_subset({"spec": {"replicas": 3}}, live)
    assert not is_subset({"spec": {"ports": [{"port": 1}, {"port": 2}]}}, live)


def test_subset_takes_an_empty_string_for_an_omitted_field():
    # The API server drops `value: ""` from an env var; it is no drift.
    assert is_subset({"env": [{"name": "PREFIX", "value": ""}]}, {"env": [{"name": "PREFIX"}]})
    assert not is_subset({"env": [{"name": "PREFIX", "value": "x"}]},
                         {"env": [{"name": "PREFIX"}]})
