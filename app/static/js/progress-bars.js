// Progress bars take their widths from data-width (the CSP forbids inline style attributes).
document.querySelectorAll(".progress .bar[data-width]").forEach((bar) => {
  bar.style.width = bar.dataset.width + "%";
});
