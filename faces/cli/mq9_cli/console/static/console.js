"use strict";
// The console's one script: rows and states that change while a page is open, from the
// server's event streams. Whatever arrives is set as textContent, never parsed as HTML.
(function () {
  var FINAL = ["completed", "failed", "canceled", "rejected"];

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function refresh(image) {
    if (image) {
      image.src = image.src.split("?")[0] + "?t=" + Date.now();
    }
  }

  function followMailbox(table) {
    var state = document.getElementById("live-state");
    var source = new EventSource(table.dataset.live);
    source.onopen = function () { state.textContent = "live"; };
    source.onerror = function () { state.textContent = "reconnecting"; };
    source.onmessage = function (event) {
      var m = JSON.parse(event.data);
      var id = Number(m.msg_id);
      if (table.querySelector('tr[data-msg-id="' + id + '"]')) {
        return;
      }
      var row = document.createElement("tr");
      row.className = "message arrived";
      row.dataset.msgId = String(id);
      var link = document.createElement("a");
      link.href = "/mailboxes/" + table.dataset.mailbox + "/messages/" + id;
      link.textContent = String(id);
      cell(row, "").appendChild(link);
      cell(row, m.priority);
      cell(row, m.time);
      cell(row, m.key || "");
      cell(row, (m.tags || []).join(", "));
      var pre = document.createElement("pre");
      pre.className = "payload";
      pre.textContent = m.preview.text;
      var payload = cell(row, "");
      payload.appendChild(pre);
      if (m.preview.more > 0) {
        var more = document.createElement("a");
        more.href = link.href;
        more.textContent = "… " + m.preview.more + " more characters";
        payload.appendChild(more);
      }
      // in msg_id order: a message a cut answer hid comes after newer ones (overview.follow)
      var body = table.tBodies[0];
      var later = Array.prototype.find.call(body.querySelectorAll("tr.message"), function (r) {
        return Number(r.dataset.msgId) > id;
      });
      body.insertBefore(row, later || null);
      var none = table.querySelector("tr.none");
      if (none) {
        none.remove();
      }
      var sum = 0;
      ["critical", "urgent", "normal"].forEach(function (lane) {
        var count = document.getElementById("count-" + lane);
        if (count && m.counts && lane in m.counts) {
          count.textContent = String(m.counts[lane]);
          sum += Number(m.counts[lane]);
        }
      });
      var total = document.getElementById("total");
      // no counts: the stream's one QUERY could not count them all (the page's figure stays)
      if (total && m.counts && !document.getElementById("lower-bound")) {
        total.textContent = String(sum);
      }
      // (#107) a delayed message come due arrives here: the scheduled count the broker tells
      var scheduled = document.getElementById("scheduled");
      if (scheduled && scheduled.dataset.told === "yes" && typeof m.scheduled === "number") {
        scheduled.textContent = String(m.scheduled);
        var due = document.getElementById("next-due");
        if (due) {
          due.textContent = m.next_due || "none held";
        }
      }
      refresh(document.getElementById("depth"));
    };
  }

  function followCall(box) {
    var source = new EventSource(box.dataset.live);
    source.addEventListener("call", function (event) {
      var c = JSON.parse(event.data);
      document.getElementById("state").textContent = c.state;
      document.getElementById("pending").hidden = !c.answer_pending;
      ["question", "result", "reason"].forEach(function (key) {
        document.getElementById(key).textContent = c[key] || "";
      });
      var form = document.getElementById("answer-form");
      if (form && (c.state !== "input-required" || c.answer_pending)) {
        form.hidden = true;
      }
      if (FINAL.indexOf(c.state) >= 0) {
        source.close();
        var cancel = document.getElementById("cancel-form");
        if (cancel) {
          cancel.hidden = true;
        }
      }
      refresh(document.getElementById("timeline"));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector("table[data-live]");
    if (table) {
      followMailbox(table);
    }
    var call = document.querySelector("#call[data-live]");
    if (call) {
      followCall(call);
    }
  });
})();
