"""deploy/ cannot run here (no Docker engine, no cluster), so it is validated: the compose file parses, references
only files that exist, publishes no host port twice (loopback only), pins every image, and gives each K2 service
an environment that is valid Settings on the production profile; the Kubernetes manifests pass the Kubernetes API
schemas (kubernetes-validate, offline, strict); Trino's catalog file names the services compose runs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from k2.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, object]] = COMPOSE["services"]
K2_SERVICES = [name for name, service in SERVICES.items() if service.get("image") == "k2:local"]


def test_every_referenced_file_exists_and_dependencies_are_services() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):  # type: ignore[attr-defined]
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses volume {source}, not declared"
        for dependency in service.get("depends_on", []):  # type: ignore[attr-defined]
            assert dependency in SERVICES, f"{name} depends on {dependency}, not a service"
    assert (DEPLOY / COMPOSE["x-k2"]["build"] / "Dockerfile").exists()


def test_images_are_pinned_and_host_ports_unique_on_loopback() -> None:
    published: dict[int, str] = {}
    for name, service in SERVICES.items():
        image = str(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image} is not pinned to a version"
        for mapping in service.get("ports", []):  # type: ignore[attr-defined]
            host, port, _ = str(mapping).split(":")
            assert host == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert int(port) not in published, f"{name} and {published.get(int(port))} both publish {port}"
            published[int(port)] = name


@pytest.mark.parametrize("name", K2_SERVICES)
def test_k2_services_run_the_production_profile_with_valid_settings(name: str) -> None:
    environment = {k: str(v) for k, v in SERVICES[name]["environment"].items()}  # type: ignore[attr-defined]
    values = {key.removeprefix("K2_").lower(): value for key, value in environment.items() if key.startswith("K2_")}
    unknown = set(values) - set(Settings.model_fields)
    assert not unknown, f"{name} sets settings K2 does not have: {unknown}"
    settings = Settings(**values)  # type: ignore[arg-type]
    assert settings.catalog_type == "rest" and settings.s3_endpoint and settings.schema_registry_url
    host = settings.catalog_uri.split("//")[1].split(":")[0]  # type: ignore[union-attr]
    assert host in SERVICES and settings.kafka_bootstrap.split(":")[0] in SERVICES  # type: ignore[union-attr]
    assert SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == settings.s3_secret_access_key  # type: ignore[index]


def test_trino_catalog_points_at_the_compose_catalog_and_store() -> None:
    properties = dict(line.split("=", 1) for line in (DEPLOY / "trino" / "catalog" / "iceberg.properties")
                      .read_text().splitlines() if line and not line.startswith("#"))
    assert properties["connector.name"] == "iceberg" and properties["iceberg.catalog.type"] == "rest"
    for key in ("iceberg.rest-catalog.uri", "s3.endpoint"):
        assert properties[key].split("//")[1].split(":")[0] in SERVICES
    assert properties["s3.aws-secret-key"] == SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"]  # type: ignore[index]


def test_kubernetes_manifests_pass_the_api_schemas() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    kinds = set()
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()):
            kubernetes_validate.validate(document, "1.31.0", strict=True)
            kinds.add(document["kind"])
            for container in _containers(document):
                assert container["image"].split(":")[1] != "latest"
                configured = {ref.get("configMapRef", {}).get("name") for ref in container.get("envFrom", [])}
                assert "k2-config" in configured
    assert {"Deployment", "Service", "CronJob", "ConfigMap", "Secret"} <= kinds
    config = yaml.safe_load((DEPLOY / "k8s" / "config.yaml").read_text())["data"]
    settings = Settings(**{k.removeprefix("K2_").lower(): v for k, v in config.items()})
    assert settings.catalog_type == "rest"


def test_a_manifest_error_is_caught() -> None:
    """The validator really checks: a misspelt field fails."""
    document = yaml.safe_load((DEPLOY / "k8s" / "namespace.yaml").read_text())
    document["metadata"]["nmae"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, "1.31.0", strict=True)


def _containers(document: dict[str, object]) -> list[dict[str, object]]:
    spec = document.get("spec") or {}
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]  # type: ignore[index]
    template = spec.get("template") if isinstance(spec, dict) else None
    return list(template["spec"]["containers"]) if template else []  # type: ignore[index]


def test_every_alert_links_to_a_runbook_section_that_exists() -> None:
    import re

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    runbook = (DEPLOY.parent / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for group in rules["groups"]:
        for rule in group["rules"]:
            link = rule["annotations"]["runbook"]
            path, _, anchor = link.partition("#")
            assert path == "docs/operations.md" and anchor in anchors, f"{rule['alert']}: {link}"
            assert f"`{rule['alert']}`" in runbook, f"the runbook does not name {rule['alert']}"
    # the chaos drills' table links each fault to its entry: those links must land too
    inner = re.findall(r"\]\(#([^)]+)\)", runbook)
    assert inner and set(inner) <= anchors, set(inner) - anchors
