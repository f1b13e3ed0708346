// The experiment grid: a thumbnail that cannot load says why (the slice endpoint answers JSON errors).
(function () {
  "use strict";

  function unavailable(img) {
    const holder = img.closest(".thumb-image");
    if (!holder || holder.dataset.failed) return;
    holder.dataset.failed = "1";
    const message = document.createElement("span");
    message.className = "thumb-missing";
    message.textContent = "image unavailable";
    img.replaceWith(message);
    fetch(img.src, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then((response) => response.json())
      .then((body) => { if (body && body.detail) { message.textContent = "image unavailable: " + body.detail; } })
      .catch(() => { /* the short message stays */ });
  }

  // Image errors do not bubble: listen in the capture phase, and catch those that failed before this ran.
  document.addEventListener("error", (event) => {
    if (event.target instanceof HTMLImageElement && event.target.closest(".thumb")) unavailable(event.target);
  }, true);
  document.querySelectorAll(".thumb img").forEach((img) => {
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) unavailable(img);
  });
})();
