// Poll the API while a run is queued or running; reload once they have all ended (metrics, links).
(function () {
  const table = document.getElementById("training-runs");
  const active = () => [...table.querySelectorAll("td.state")].some(td => /^(queued|running)/.test(td.textContent.trim()));
  async function poll() {
    if (!active()) return;
    const response = await fetch(table.dataset.api + "?limit=50", {credentials: "same-origin"});
    if (response.ok) {
      const page = await response.json();
      let ended = false;
      for (const run of page.results) {
        const row = table.querySelector(`tr[data-run="${run.id}"]`);
        if (!row) continue;
        row.querySelector("progress").value = run.progress;
        row.querySelector(".message").textContent = run.message;
        if (!["queued", "running"].includes(run.state)) ended = true;
      }
      if (ended) { window.location.reload(); return; }
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
