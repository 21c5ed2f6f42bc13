/* Luma tracker dashboard: live regions and busy forms. No inline script anywhere (CSP). */
(function () {
  "use strict";

  var MAX_BACKOFF = 30000;

  function statusLine(text, kind) {
    var nodes = document.querySelectorAll("[data-live-status]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = text;
      nodes[i].className = "live-status" + (kind ? " is-" + kind : "");
    }
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /* Make `current` look like `fresh`, touching only what differs: unchanged rows keep their
     nodes (no image is fetched again, the focus and the text selection stay), rows are
     matched by data-task-id or data-key, and an open <details> stays open. */
  function key(node) {
    if (node.nodeType !== 1) return null;
    return node.getAttribute("data-task-id") || node.getAttribute("data-event-id") ||
      node.getAttribute("data-key") || node.id || null;
  }

  function syncAttributes(current, fresh) {
    Array.prototype.slice.call(current.attributes).forEach(function (attribute) {
      if (attribute.name === "open" && current.nodeName === "DETAILS") return; // the reader's
      if (!fresh.hasAttribute(attribute.name)) current.removeAttribute(attribute.name);
    });
    Array.prototype.slice.call(fresh.attributes).forEach(function (attribute) {
      if (current.getAttribute(attribute.name) !== attribute.value) {
        current.setAttribute(attribute.name, attribute.value);
      }
    });
  }

  function morph(current, fresh) {
    if (current.isEqualNode(fresh)) return current;
    if (current.nodeType !== fresh.nodeType || current.nodeName !== fresh.nodeName ||
        key(current) !== key(fresh) || current.nodeName === "VIDEO" || current.nodeName === "IMG") {
      if (current.nodeName === "VIDEO" && current.getAttribute("src") === fresh.getAttribute("src")) {
        return current; // the same video: let it play on
      }
      current.replaceWith(fresh);
      return fresh;
    }
    if (current.nodeType !== 1) {
      current.nodeValue = fresh.nodeValue;
      return current;
    }
    syncAttributes(current, fresh);
    morphChildren(current, fresh);
    return current;
  }

  function morphChildren(current, fresh) {
    var old = Array.prototype.slice.call(current.childNodes);
    var next = Array.prototype.slice.call(fresh.childNodes);
    var keyed = {};
    old.forEach(function (node) {
      var k = key(node);
      if (k) keyed[k] = node;
    });
    var positional = old.length === next.length;
    var result = next.map(function (node, index) {
      var k = key(node);
      if (k && keyed[k]) return morph(keyed[k], node);
      if (!k && positional && old[index] && !key(old[index])) return morph(old[index], node);
      return node;
    });
    var same = result.length === old.length && result.every(function (node, index) {
      return node === old[index];
    });
    if (!same) current.replaceChildren.apply(current, result);
  }

  /* A region with data-live-url is fetched again every data-live-interval ms with the
     header X-Live: 1; the server answers with the region's new HTML (same id), and the
     region is brought in line with it (see morph). The page keeps its scroll position, the
     search box keeps what is being typed, and nothing is reloaded. */
  function LiveRegion(element) {
    this.element = element;
    this.timer = null;
    this.failures = 0;
    this.busy = false;
  }

  LiveRegion.prototype.url = function () {
    return this.element.getAttribute("data-live-url");
  };

  LiveRegion.prototype.interval = function () {
    var value = parseInt(this.element.getAttribute("data-live-interval"), 10);
    return value > 0 ? value : 3000;
  };

  LiveRegion.prototype.schedule = function (delay) {
    var self = this;
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.url()) {
      statusLine("", "");
      return;
    }
    if (document.visibilityState === "hidden") {
      statusLine("Paused while this tab is hidden", "paused");
      return;
    }
    this.timer = setTimeout(function () { self.refresh(); }, delay);
  };

  LiveRegion.prototype.refresh = function () {
    var self = this;
    var url = this.url();
    if (!url || this.busy) return;
    this.busy = true;
    this.element.classList.add("is-loading");
    fetch(url, { headers: { "X-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.text().then(function (text) {
          if (!response.ok) {
            var error = new Error(text.trim() || "HTTP " + response.status);
            error.status = response.status;
            throw error;
          }
          return text;
        });
      })
      .then(function (html) {
        self.apply(html);
        self.failures = 0;
        statusLine(self.url() ? "Live · updated " + clock() : "", "live");
        self.schedule(self.interval());
      })
      .catch(function (error) {
        self.failures += 1;
        if (error.status === 401) {
          statusLine("Signed out: reload the page to sign in again", "error");
          return;
        }
        var wait = Math.min(MAX_BACKOFF, self.interval() * Math.pow(2, self.failures));
        var reason = error.status ? error.message : "the server cannot be reached";
        statusLine("Not updating (" + reason + "); trying again in " + Math.round(wait / 1000) + " s", "error");
        self.schedule(wait);
      })
      .then(function () {
        self.busy = false;
        self.element.classList.remove("is-loading");
      });
  };

  LiveRegion.prototype.apply = function (html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    var fresh = template.content.firstElementChild;
    if (!fresh || fresh.id !== this.element.id) throw new Error("unexpected answer");
    if (this.element.isEqualNode(fresh)) return;
    syncAttributes(this.element, fresh);
    morphChildren(this.element, fresh);
    document.dispatchEvent(new CustomEvent("tracker:updated", { detail: { id: this.element.id } }));
  };

  function startLive() {
    var regions = [];
    document.querySelectorAll("[data-live-url]").forEach(function (element) {
      var region = new LiveRegion(element);
      regions.push(region);
      region.schedule(region.interval());
    });
    if (!regions.length) return;
    statusLine("Live", "live");
    document.addEventListener("visibilitychange", function () {
      regions.forEach(function (region) {
        if (document.visibilityState === "hidden") region.schedule(0);
        else if (region.url()) region.refresh();
      });
    });
  }

  /* Forms: ask before a risky action, and show that a submit is under way. */
  function busyForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      if (form.method.toLowerCase() !== "post") return;
      form.classList.add("is-busy");
      var buttons = form.querySelectorAll("button[type=submit]");
      setTimeout(function () {
        buttons.forEach(function (button) {
          button.disabled = true;
          if (form.getAttribute("data-busy-text")) button.textContent = form.getAttribute("data-busy-text");
        });
      }, 0);
    });
    /* a page restored from the back/forward cache gets its buttons back */
    window.addEventListener("pageshow", function () {
      document.querySelectorAll("form.is-busy").forEach(function (form) {
        form.classList.remove("is-busy");
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = false; });
      });
    });
  }

  /* The new-task form: the kind select shows the fields of the chosen kind and hides (and
     disables: a disabled field is not sent) the others, each marked data-kinds="a b". The
     hidden `shown` field says which kind's fields were shown; without this script the
     server shows another kind's fields when the POST names a kind that is not the one shown. */
  function kindFields() {
    var select = document.querySelector("select[data-kind-select]");
    if (!select) return;
    var form = select.form;
    function apply() {
      var kind = select.value;
      if (form.elements.shown) form.elements.shown.value = kind;
      form.setAttribute("data-kind", kind);
      document.querySelectorAll("[data-kinds]").forEach(function (node) {
        var on = node.getAttribute("data-kinds").split(" ").indexOf(kind) >= 0;
        node.hidden = !on;
        if ("disabled" in node) node.disabled = !on;
      });
    }
    select.addEventListener("change", apply);
    apply();
  }

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  ready(function () {
    startLive();
    busyForms();
    kindFields();
  });
})();
