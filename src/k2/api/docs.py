"""docs/api.md, rendered from the OpenAPI document (`python -m k2.api.docs > docs/api.md`; a test keeps it current)."""

from __future__ import annotations

from typing import Any


def render(spec: dict[str, Any]) -> str:
    lines = [f"# {spec['info']['title']} (v{spec['info']['version']})", "",
             "Generated from the OpenAPI document by `python -m k2.api.docs > docs/api.md`; the live document is at",
             "`/openapi.json` and the interactive one at `/docs` of `k2 serve`.", "",
             spec["info"].get("description", ""), ""]
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            lines += [f"## `{method.upper()} {path}`", "", operation.get("description", "").strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | in | required | description |", "|---|---|---|---|"]
                for parameter in parameters:
                    text = parameter.get("description", "").replace("|", "\\|").replace("\n", " ")
                    lines.append(f"| `{parameter['name']}` | {parameter['in']} | "
                                 f"{'yes' if parameter.get('required') else 'no'} | {text} |")
                lines.append("")
            codes = ", ".join(sorted(operation.get("responses", {})))
            lines += [f"Responses: {codes}.", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    from k2.api.app import create_app
    from k2.settings import get_settings

    print(render(create_app(get_settings()).openapi()), end="")
