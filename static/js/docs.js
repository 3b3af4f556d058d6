// /docs: Swagger UI over /openapi.json. "Authorize" takes an API token (Settings → API tokens).
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({ url: root.dataset.spec, dom_id: "#swagger-ui", deepLinking: true });
