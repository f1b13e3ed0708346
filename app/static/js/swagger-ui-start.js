// Starts Swagger UI on the API docs page with the settings its container carries.
window.addEventListener("load", () => {
  const box = document.getElementById("swagger-ui-container");
  window.ui = SwaggerUIBundle({url: box.dataset.url, dom_id: "#swagger-ui-container", ...JSON.parse(box.dataset.config)});
});
