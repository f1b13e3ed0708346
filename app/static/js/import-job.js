// A background import's progress: poll the job API until the job ends, then show its result or error.
(function () {
  const box = document.getElementById("import-job");
  const bar = box.querySelector("progress");
  async function poll() {
    let job;
    try {
      const answer = await fetch(box.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      job = await answer.json();
    } catch (err) { setTimeout(poll, 2000); return; }
    bar.value = job.progress;
    box.querySelector(".state").textContent = job.state;
    box.querySelector(".message").textContent = job.message || "";
    if (job.state === "failed") {
      const pre = box.querySelector(".error-message");
      pre.hidden = false;
      pre.textContent = job.error;
    } else if (job.state === "succeeded") {
      const counts = Object.entries(job.result.counts || {}).filter(([, n]) => n > 0);
      box.querySelector(".result").textContent = (job.result.dry_run ? "Would change: " : "Changed: ")
        + (counts.map(([name, n]) => name.replaceAll("_", " ") + " " + n).join(", ") || "nothing");
    } else if (job.state !== "cancelled") {
      setTimeout(poll, 1000);
    }
  }
  poll();
})();
