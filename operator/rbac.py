"""The API access the operator needs: the one declaration of its RBAC rules.

The Helm chart's ClusterRole (charts/recop/templates/rbac.yaml) must equal `RULES`
(tests/test_chart.py checks it), and the e2e RBAC test (e2e/test_helm.py) compares what
the operator's service account actually did, from the API server's audit log, with it:
every rule is used, and nothing used is missing. Rules marked `ahead` are granted for
controllers that come later and are left out of the "every rule is used" half.

RecOp runs cluster-wide only, so every rule lands in one ClusterRole.
"""

from __future__ import annotations

from dataclasses import dataclass

from recop.api import ABTEST, GROUP, MODELVERSION, RECMODEL


@dataclass(frozen=True)
class Rule:
    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    used_by: str
    # Granted now for a controller that does not exist yet (ModelVersion, ABTest).
    ahead: bool = False

    def to_wire(self) -> dict:
        return {"apiGroups": [self.group], "resources": list(self.resources),
                "verbs": list(self.verbs)}


# Server-side apply of an object that does not exist yet is a PATCH that the API server
# authorizes twice: as patch, and as create. No get: reconciles read children from the
# indexes on Kopf's watches (controllers/recmodel/cache.py).
OWNED = ("list", "watch", "create", "patch", "delete")

RULES: tuple[Rule, ...] = (
    Rule(GROUP, (RECMODEL.plural,), ("get", "list", "watch", "patch"),
         "Kopf watches RecModels and patches their annotations (progress, diff-base); "
         "a ModelVersion's drive reads its model each pass"),
    Rule(GROUP, (f"{RECMODEL.plural}/status",), ("patch",),
         "controllers/recmodel._report and the ModelVersion controller apply their parts of "
         "the status subresource (server-side apply is a PATCH)"),
    # Marked ahead only because e2e/test_helm applies no ModelVersion or ABTest; their own
    # e2e tests (e2e/test_modelversion, e2e/test_abtest) exercise them.
    Rule(GROUP, (MODELVERSION.plural, ABTEST.plural), ("get", "list", "watch", "patch"),
         "controllers/modelversion and controllers/abtest: Kopf watches and annotates them; "
         "the RecModel controller watches ABTests too (an index of their placements)",
         ahead=True),
    Rule(GROUP, (f"{MODELVERSION.plural}/status", f"{ABTEST.plural}/status"), ("patch",),
         "the ModelVersion and ABTest controllers report status", ahead=True),
    # The objects a RecModel is served by (controllers/recmodel.OWNED_KINDS): Kopf watches
    # them (controllers/recmodel._on_child), _apply reads one to see whether it drifted
    # and writes it by server-side apply (create and patch), _prune lists a model's
    # objects and deletes those a new spec no longer wants.
    Rule("apps", ("deployments",), OWNED, "RecModel children: embedding servers, Triton"),
    Rule("policy", ("poddisruptionbudgets",), OWNED, "RecModel children: one per shard"),
    Rule("", ("services",), OWNED, "RecModel children: shard and Triton Services"),
    # No ConfigMap is built any more (Triton reads its config from each load): list, watch
    # and delete only prune the ones older operators created.
    Rule("", ("configmaps",), ("list", "watch", "delete"),
         "RecModel children of older operators (Triton's config.pbtxt), pruned"),
    Rule("networking.k8s.io", ("networkpolicies",), OWNED,
         "RecModel children: the embedding servers' admin port only from the operator"),
    Rule("discovery.k8s.io", ("endpointslices",), ("list", "watch"),
         "status from discovery: Kopf watches and indexes slices; a ModelVersion's drive "
         "lists its model's slices to find the servers"),
    Rule("", ("pods",), ("list", "watch"),
         "controllers/recmodel watches and indexes a model's pods, to say why replicas "
         "are missing (OOMKilled, CrashLoopBackOff, Unschedulable)"),
    Rule("", ("nodes",), ("list", "watch"),
         "controllers/recmodel indexes nodes for the fit checks (controllers/common/fit)"),
    Rule("", ("events",), ("create",),
         "kopf.info/kopf.warn post Events (Applied, CannotPlace, Ready, ...)"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"),
         "Kopf's resource observer notices CRDs added or changed while it runs"),
    Rule("kopf.dev", ("clusterkopfpeerings",), ("list", "watch"),
         "Kopf peering: each replica watches the ClusterKopfPeering `recop`"),
    Rule("kopf.dev", ("clusterkopfpeerings/status",), ("patch",),
         "Kopf peering: keep-alives go to the status subresource (charts/recop/crds)"),
    Rule("", ("secrets",), ("get",),
         "controllers/common/secrets reads the Secrets a RecModel names: the S3 credentials "
         "(storage.accessKeyId/secretAccessKey), the admin token and TLS CA "
         "(embeddingServer.adminAuth); get only, never list or watch. Ahead for "
         "the same reason as modelversions", ahead=True),
    Rule("gateway.networking.k8s.io", ("httproutes", "grpcroutes"), ("get", "create", "patch"),
         "controllers/abtest._reconcile reads each test's routes to see whether they "
         "drifted and writes them by server-side apply; owner references delete them. "
         "Marked ahead only because e2e/test_helm creates no ABTest yet (e2e/test_abtest "
         "uses it)", ahead=True),
)


def cluster_role_rules() -> list[dict]:
    """`RULES` as the ClusterRole's `rules`, in order."""
    return [rule.to_wire() for rule in RULES]


def granted() -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource[/subresource], verb) the rules grant."""
    return {(rule.group, resource, verb) for rule in RULES
            for resource in rule.resources for verb in rule.verbs}


def granted_ahead() -> set[tuple[str, str, str]]:
    """The grants that wait for controllers to come: not yet expected to be used."""
    return {(rule.group, resource, verb) for rule in RULES if rule.ahead
            for resource in rule.resources for verb in rule.verbs}
