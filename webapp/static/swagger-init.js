// Starts Swagger UI from the data attributes of its container (no inline script, strict CSP).
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  var config = {
    url: container.dataset.specUrl,
    dom_id: "#swagger-ui-container",
    deepLinking: true,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset.slice(1)],
    layout: "BaseLayout",
  };
  var overrides = JSON.parse(container.dataset.config || "{}");
  for (var key in overrides) { config[key] = overrides[key]; }
  window.ui = SwaggerUIBundle(config);
});
