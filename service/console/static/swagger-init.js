// Starts the packaged Swagger UI on /openapi.json (a file: the CSP forbids inline script).
"use strict";
window.addEventListener("load", function () {
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({ url: root.dataset.spec, dom_id: "#swagger-ui" });
});
