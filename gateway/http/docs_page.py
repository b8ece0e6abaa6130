"""`GET /docs`: one self-contained HTML page that renders the OpenAPI document embedded in it
(no CDN, no request anywhere: deployments may be offline). Descriptions are Markdown: the
page renders paragraphs, `-` lists, `code` and **bold**, building DOM nodes (never HTML from
the text)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

DOCS_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:980px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
pre,code{font:13px/1.4 ui-monospace,Menlo,Consolas,monospace}
.intro{background:#fff;border:1px solid #d8dee6;padding:0 12px;border-radius:6px}
details{background:#fff;border:1px solid #d8dee6;border-radius:6px;margin:6px 0}
summary{cursor:pointer;padding:8px 10px}
.m{display:inline-block;min-width:64px;font-weight:700;font-family:ui-monospace,monospace}
.GET{color:#1a6fb3}.POST{color:#1b7f3b}.PUT{color:#9a6700}.DELETE{color:#b42318}
.body{padding:0 14px 10px}.alias{color:#6b7785;font-size:13px}
table{border-collapse:collapse;width:100%;margin:6px 0}
td,th{border:1px solid #e3e8ee;padding:4px 6px;text-align:left;vertical-align:top}
ul.s{margin:2px 0;padding-left:18px}.req{color:#b42318}.t{color:#6b7785}
"""

DOCS_SCRIPT = r"""
(function () {
  "use strict";
  var spec = JSON.parse(document.getElementById("spec").textContent);
  var root = document.getElementById("app");
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (k) {
      e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
    });
    return e;
  }
  // Markdown, the little the descriptions use: `code`, **bold**, paragraphs and "- " lists.
  function inline(text) {
    return String(text).split(/(`[^`]+`|\*\*[^*]+\*\*)/).filter(Boolean).map(function (part) {
      if (/^`[^`]+`$/.test(part)) return el("code", {}, [part.slice(1, -1)]);
      if (/^\*\*[^*]+\*\*$/.test(part)) return el("b", {}, [part.slice(2, -2)]);
      return part;
    });
  }
  function markdown(text, cls) {
    var box = el("div", cls ? {"class": cls} : {});
    String(text).split(/\n\s*\n/).forEach(function (block) {
      var lines = block.trim().split("\n");
      if (lines.every(function (l) { return /^\s*- /.test(l); })) {
        box.appendChild(el("ul", {}, lines.map(function (l) {
          return el("li", {}, inline(l.replace(/^\s*- /, "")));
        })));
      } else {
        box.appendChild(el("p", {}, inline(lines.join(" "))));
      }
    });
    return box;
  }
  function deref(s) {
    var seen = 0;
    while (s && s.$ref && seen++ < 20) {
      s = s.$ref.split("/").slice(1).reduce(function (o, p) { return o[p]; }, spec);
    }
    return s || {};
  }
  function typeOf(s) {
    var t = s.type || (s.anyOf ? "one of" : s.$ref ? "" : "any");
    t = Array.isArray(t) ? t.join(" | ") : t;
    if (s.format) t += " (" + s.format + ")";
    if (s.enum) t += " " + s.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    if (s.const !== undefined) t += " " + JSON.stringify(s.const);
    if (s.pattern) t += " /" + s.pattern + "/";
    return t;
  }
  function schemaTree(s, depth) {
    var name = s && s.$ref ? s.$ref.split("/").pop() : "";
    s = deref(s);
    var line = el("span", {}, [el("span", {"class": "t"}, [(name ? name + ": " : "") + typeOf(s)])]);
    if (s.description) inline(" - " + s.description).forEach(function (n) {
      line.appendChild(typeof n === "string" ? document.createTextNode(n) : n);
    });
    var out = el("div", {}, [line]);
    if (depth > 6) return out;
    if (s.anyOf) {
      var alts = el("ul", {"class": "s"});
      s.anyOf.forEach(function (a) { alts.appendChild(el("li", {}, [schemaTree(a, depth + 1)])); });
      out.appendChild(alts);
    }
    function sub(label, schema) {
      return el("ul", {"class": "s"}, [el("li", {}, [label, schemaTree(schema, depth + 1)])]);
    }
    if (s.items) out.appendChild(sub("items: ", s.items));
    if (s.properties) {
      var ul = el("ul", {"class": "s"});
      var req = s.required || [];
      Object.keys(s.properties).forEach(function (p) {
        var li = el("li", {}, [el("code", {}, [p])]);
        if (req.indexOf(p) >= 0) li.appendChild(el("span", {"class": "req"}, [" *"]));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(schemaTree(s.properties[p], depth + 1));
        ul.appendChild(li);
      });
      out.appendChild(ul);
    }
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      out.appendChild(sub("<name>: ", s.additionalProperties));
    }
    return out;
  }
  function operation(path, method, op) {
    var m = method.toUpperCase();
    var summary = el("summary", {}, [el("span", {"class": "m " + m}, [m]),
      " ", el("code", {}, [path]), "  " + (op.summary || "")]);
    if (op["x-alias-of"]) summary.appendChild(el("span", {"class": "alias"}, ["  (alias)"]));
    var body = el("div", {"class": "body"});
    if (op.description) body.appendChild(markdown(op.description));
    var sec = op.security || spec.security || [];
    var names = sec.map(function (r) { return Object.keys(r).join(" + ") || "none"; });
    body.appendChild(el("p", {}, ["Auth: " + (names.length ? names.join(" or ") : "none")]));
    if (op.parameters) {
      var head = ["Parameter", "In", "Schema / description"].map(function (h) { return el("th", {}, [h]); });
      var t = el("table", {}, [el("tr", {}, head)]);
      op.parameters.forEach(function (p) {
        var cell = el("td", {}, [schemaTree(p.schema || {}, 0)]);
        if (p.description) cell.appendChild(markdown(p.description));
        var req = p.required ? el("span", {"class": "req"}, [" *"]) : "";
        var name = el("td", {}, [el("code", {}, [p.name]), req]);
        t.appendChild(el("tr", {}, [name, el("td", {}, [p["in"]]), cell]));
      });
      body.appendChild(t);
    }
    if (op.requestBody) {
      body.appendChild(el("h4", {}, ["Request body"]));
      Object.keys(op.requestBody.content).forEach(function (ct) {
        var schema = op.requestBody.content[ct].schema;
        body.appendChild(el("div", {}, [el("code", {}, [ct]), schemaTree(schema, 0)]));
      });
    }
    body.appendChild(el("h4", {}, ["Responses"]));
    var rt = el("table");
    Object.keys(op.responses).forEach(function (code) {
      var r = op.responses[code];
      var cell = el("td", {}, inline(r.description || ""));
      Object.keys(r.content || {}).forEach(function (ct) {
        cell.appendChild(el("div", {}, [el("code", {}, [ct]), schemaTree(r.content[ct].schema || {}, 0)]));
      });
      Object.keys(r.headers || {}).forEach(function (h) {
        var text = ": " + (r.headers[h].description || "");
        cell.appendChild(el("div", {}, ["Header ", el("code", {}, [h]), text]));
      });
      rt.appendChild(el("tr", {}, [el("td", {}, [el("b", {}, [code])]), cell]));
    });
    body.appendChild(rt);
    return el("details", {}, [summary, body]);
  }
  root.appendChild(el("h1", {}, [spec.info.title]));
  root.appendChild(el("p", {}, ["Version " + spec.info.version + " - OpenAPI " + spec.openapi + " - ",
    el("a", {href: "openapi.json"}, ["openapi.json"])]));
  root.appendChild(markdown(spec.info.description || "", "intro"));
  var byTag = {};
  Object.keys(spec.paths).forEach(function (path) {
    Object.keys(spec.paths[path]).forEach(function (method) {
      var op = spec.paths[path][method];
      var tag = (op.tags || ["Other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operation(path, method, op));
    });
  });
  (spec.tags || []).map(function (t) { return t.name; }).concat(Object.keys(byTag)).forEach(function (tag) {
    if (!byTag[tag]) return;
    root.appendChild(el("h2", {id: tag}, [tag]));
    byTag[tag].forEach(function (d) { root.appendChild(d); });
    delete byTag[tag];
  });
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only our own inline script and style run; nothing is loaded from anywhere, not even this host.
DOCS_CSP = (
    f"default-src 'none'; script-src {_csp_hash(DOCS_SCRIPT)}; style-src {_csp_hash(DOCS_STYLE)};"
    " img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _embed_json(doc: dict[str, Any]) -> str:
    """JSON safe inside <script type="application/json">: no `</script>` or `<!--` can appear."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_docs(doc: dict[str, Any]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_html_escape(doc['info']['title'])} - API documentation</title>"
        f'<style>{DOCS_STYLE}</style></head><body><main id="app">'
        '<noscript><p>This page renders <a href="openapi.json">openapi.json</a>'
        " with JavaScript.</p></noscript>"
        "</main>"
        f'<script type="application/json" id="spec">{_embed_json(doc)}</script>'
        f"<script>{DOCS_SCRIPT}</script></body></html>\n"
    )


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
