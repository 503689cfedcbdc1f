// Progressive enhancement only: every page works without JavaScript.
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el.matches("select[data-autosubmit]") && el.form) el.form.submit();
});

// The top bar's menu folds behind the Menu button below 960 px (CSS); without this script the
// button stays hidden and the menu stays open. Escape closes it and gives focus back to the button.
(function () {
  var toggle = document.querySelector(".nav-toggle");
  if (!toggle) return;
  var bar = toggle.closest(".topbar");
  function setOpen(open) {
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    bar.classList.toggle("nav-open", open);
  }
  bar.classList.add("nav-collapsible");
  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    setOpen(toggle.getAttribute("aria-expanded") !== "true");
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && bar.classList.contains("nav-open")) {
      setOpen(false);
      toggle.focus();
    }
  });
})();

// On a phone a table with a header row shows one card per row (CSS); each cell is named by its
// column's header here (data-label), unless the template named it already.
function labelTableCells(root) {
  root.querySelectorAll("table.table").forEach(function (table) {
    var head = table.tHead && table.tHead.rows[0];
    if (!head) return;
    var labels = [];
    Array.prototype.forEach.call(head.cells, function (cell) {
      for (var i = 0; i < cell.colSpan; i++) labels.push(cell.textContent.trim());
    });
    Array.prototype.forEach.call(table.tBodies, function (body) {
      Array.prototype.forEach.call(body.rows, function (row) {
        var column = 0;
        Array.prototype.forEach.call(row.cells, function (cell) {
          if (cell.colSpan === 1 && labels[column] && !cell.hasAttribute("data-label")) {
            cell.setAttribute("data-label", labels[column]);
          }
          column += cell.colSpan;
        });
      });
    });
  });
}
labelTableCells(document);
// Parts of a page replaced in place (htmx) get their labels too.
document.addEventListener("htmx:afterSettle", function (event) {
  labelTableCells(event.target);
});
// Live pages (htmx polls their fragments): the run output follows its tail unless the reader
// scrolled up in it, and the scroll position survives each swap.
(function () {
  var followed = true;
  var kept = null;
  document.addEventListener("htmx:beforeSwap", function () {
    var pre = document.getElementById("run-output-text");
    if (!pre) return;
    followed = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    kept = pre.scrollTop;
  });
  function follow() {
    var pre = document.getElementById("run-output-text");
    if (!pre) return;
    if (pre.hasAttribute("data-follow") && followed) pre.scrollTop = pre.scrollHeight;
    else if (kept !== null) pre.scrollTop = kept;
  }
  document.addEventListener("htmx:afterSettle", follow);
  document.addEventListener("DOMContentLoaded", follow);
})();
