/* radvqa gallery: draws the cards and the benchmark-strata view from window.RADVQA_GALLERY.
   Plain script (module scripts are blocked on file://), no network, text set with textContent only. */
(function () {
  "use strict";
  var data = window.RADVQA_GALLERY;
  var $ = function (id) { return document.getElementById(id); };
  var SLOT_ORDER = ["anatomy_open", "anatomy_closed_yes", "anatomy_closed_no", "anatomy_mc", "abnormality_closed",
    "pathology_open", "pathology_closed_yes", "pathology_closed_no", "pathology_mc"];
  var TYPE_NAMES = {open: "open", closed: "closed (yes/no)", multiple_choice: "multiple choice"};
  var LETTERS = "ABCDEFGH";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    var name;
    for (name in attrs || {}) {
      if (attrs[name] === null || attrs[name] === undefined || attrs[name] === false) continue;
      if (name === "text") node.textContent = attrs[name];
      else if (name === "className") node.className = attrs[name];
      else node.setAttribute(name, attrs[name] === true ? "" : String(attrs[name]));
    }
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function classKey(image) { return image.modality + "|" + image.label; }
  function className(image) { return image.modality + " " + image.region + ": " + image.pathology; }
  function plural(n, one, many) { return n.toLocaleString("en") + " " + (n === 1 ? one : many || one + "s"); }

  if (!data || !data.images) {
    $("summary").textContent = "The gallery's data file (data.js) is missing or damaged; rebuild it with radvqa browse.";
    return;
  }

  /* ---------------------------------------------------------------- cards */

  function questionItem(q) {
    var item = el("li", {className: "q", "data-slot": q.slot, "data-type": q.type, title: "template " + q.tid});
    item.appendChild(el("span", {className: "slot", text: q.slot}));
    item.appendChild(el("span", {className: "qtext", text: q.q}));
    if (q.choices && q.choices.length) {
      var options = el("ol", {className: "options", "aria-label": "options"});
      q.choices.forEach(function (choice, i) {
        var letter = LETTERS.charAt(i);
        var right = letter === q.answer;
        options.appendChild(el("li", {className: right ? "correct" : null}, [
          el("span", {className: "letter", text: letter + "."}), " " + choice,
          right ? el("span", {className: "mark", "aria-hidden": "true", text: " \u2713"}) : null,
          right ? el("span", {className: "sr", text: " (correct answer)"}) : null
        ]));
      });
      item.appendChild(options);
    } else {
      item.appendChild(el("p", {className: "answer"}, ["Answer: ", el("strong", {className: "correct", text: q.answer_text || q.answer})]));
    }
    item.appendChild(el("span", {className: "tid", text: q.tid}));
    return item;
  }

  function card(image, index) {
    var label = className(image) + ", " + image.split + " split";
    var id = "card-" + index;
    var node = el("li", {className: "card", id: id, tabindex: index === 0 ? "0" : "-1", "aria-labelledby": id + "-h",
      "data-split": image.split, "data-modality": image.modality, "data-region": image.region, "data-class": classKey(image)});
    var picture = image.thumb
      ? el("img", {src: image.thumb, alt: image.modality + " image of the " + image.region + ", " + image.pathology + " (" + image.split + " split)",
          width: "160", height: "160", loading: "lazy", decoding: "async"})
      : el("div", {className: "noimage", role: "img", "aria-label": "image not found", text: "image not found"});
    node.appendChild(el("figure", {}, [picture]));
    var body = el("div", {className: "body"});
    body.appendChild(el("h2", {id: id + "-h", className: "title"}, [
      el("span", {className: "sr", text: label + ". "}),
      el("span", {className: "badge split-" + image.split, "aria-hidden": "true", text: image.split}), " ",
      el("span", {className: "badge", "aria-hidden": "true", text: image.modality}), " ",
      el("span", {"aria-hidden": "true", text: image.region + " \u00b7 "}),
      el("strong", {"aria-hidden": "true", text: image.pathology}),
      el("span", {className: image.abnormal ? "flag abnormal" : "flag normal", text: image.abnormal ? " abnormal" : " normal"})
    ]));
    body.appendChild(el("p", {className: "path", title: "image path relative to the RadImageNet copy", text: image.image + " \u00b7 " + image.label}));
    if (image.caption) {
      body.appendChild(el("p", {className: "caption", title: "prompt: " + image.caption_prompt + "\ntemplate " + image.caption_tid}, [
        el("span", {className: "slot", text: "caption"}), " ", image.caption,
        el("span", {className: "tid", text: image.caption_tid})
      ]));
    }
    var list = el("ol", {className: "questions", "aria-label": plural(image.questions.length, "question")});
    image.questions.forEach(function (q) { list.appendChild(questionItem(q)); });
    body.appendChild(list);
    node.appendChild(body);
    node._text = [image.caption, image.image, image.label, image.pathology, image.region, image.modality]
      .concat(image.questions.map(function (q) { return q.q + " " + q.choices.join(" ") + " " + q.answer_text + " " + q.tid; }))
      .join("\n").toLowerCase();
    return node;
  }

  function fillSelect(select, allLabel, values) {
    select.appendChild(el("option", {value: "", text: allLabel}));
    values.forEach(function (pair) { select.appendChild(el("option", {value: pair[0], text: pair[1]})); });
  }

  function distinct(images, key, name) {
    var seen = {}, out = [];
    images.forEach(function (image) {
      var k = key(image);
      if (!(k in seen)) { seen[k] = 0; out.push([k, name(image)]); }
      seen[k] += 1;
    });
    out.sort(function (a, b) { return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0; });
    return out.map(function (pair) { return [pair[0], pair[1] + " (" + seen[pair[0]] + ")"]; });
  }

  var images = data.images;
  var cardsNode = $("cards");
  var fragment = document.createDocumentFragment();
  var cards = images.map(function (image, i) { var node = card(image, i); fragment.appendChild(node); return node; });
  cardsNode.appendChild(fragment);

  var splitOrder = {train: 0, val: 1, test: 2};
  var splits = distinct(images, function (i) { return i.split; }, function (i) { return i.split === "test" ? "test (benchmark)" : i.split; });
  splits.sort(function (a, b) { return (splitOrder[a[0]] === undefined ? 9 : splitOrder[a[0]]) - (splitOrder[b[0]] === undefined ? 9 : splitOrder[b[0]]); });
  fillSelect($("f-split"), "all splits", splits);
  fillSelect($("f-modality"), "all modalities", distinct(images, function (i) { return i.modality; }, function (i) { return i.modality; }));
  fillSelect($("f-region"), "all regions", distinct(images, function (i) { return i.region; }, function (i) { return i.region; }));
  fillSelect($("f-class"), "all classes", distinct(images, classKey, className));
  var slots = {}, types = {};
  images.forEach(function (image) { image.questions.forEach(function (q) { slots[q.slot] = 1; types[q.type] = 1; }); });
  fillSelect($("f-slot"), "all slots", Object.keys(slots).sort(function (a, b) {
    var x = SLOT_ORDER.indexOf(a), y = SLOT_ORDER.indexOf(b);
    return (x < 0 ? 99 : x) - (y < 0 ? 99 : y) || (a < b ? -1 : 1);
  }).map(function (s) { return [s, s]; }));
  fillSelect($("f-type"), "all question types", Object.keys(types).sort().map(function (t) { return [t, TYPE_NAMES[t] || t]; }));

  var filters = ["split", "modality", "region", "class"];
  function applyFilters() {
    var wanted = {}, shown = 0, questions = 0;
    filters.forEach(function (name) { wanted[name] = $("f-" + name).value; });
    var slot = $("f-slot").value, type = $("f-type").value;
    var words = $("f-search").value.toLowerCase().split(/\s+/).filter(Boolean);
    cards.forEach(function (node) {
      var visible = filters.every(function (name) { return !wanted[name] || node.getAttribute("data-" + name) === wanted[name]; })
        && words.every(function (word) { return node._text.indexOf(word) >= 0; });
      var items = node.querySelectorAll("li.q"), inCard = 0;
      Array.prototype.forEach.call(items, function (item) {
        var keep = (!slot || item.getAttribute("data-slot") === slot) && (!type || item.getAttribute("data-type") === type);
        item.hidden = !keep;
        if (keep) inCard += 1;
      });
      node.classList.toggle("noq", inCard === 0);
      if ((slot || type) && inCard === 0) visible = false;
      node.hidden = !visible;
      if (visible) { shown += 1; questions += inCard; }
    });
    $("count").textContent = "Showing " + plural(shown, "image") + " of " + images.length.toLocaleString("en") + " (" + plural(questions, "question") + ").";
    var current = document.querySelector(".card[tabindex='0']");
    if (!current || current.hidden) {
      cards.forEach(function (node) { node.tabIndex = -1; });
      var first = visibleCards()[0];
      if (first) first.tabIndex = 0;
    }
    writeHash();
  }

  function writeHash() {
    var parts = [];
    filters.concat(["slot", "type", "search"]).forEach(function (name) {
      var value = $("f-" + name).value;
      if (value) parts.push(name + "=" + encodeURIComponent(value));
    });
    if (!$("view-strata").hidden) parts.push("view=strata");
    var hash = parts.length ? "#" + parts.join("&") : "";
    if (location.hash !== hash && history.replaceState) history.replaceState(null, "", hash || location.pathname);
  }

  function readHash() {
    var view = "cards";
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      var eq = pair.indexOf("="); if (eq < 0) return;
      var name = pair.slice(0, eq), value = decodeURIComponent(pair.slice(eq + 1));
      if (name === "view") view = value;
      else if ($("f-" + name)) $("f-" + name).value = value;
    });
    return view;
  }

  function visibleCards() { return cards.filter(function (node) { return !node.hidden; }); }

  function columns(list) {
    if (list.length < 2) return 1;
    var top = list[0].offsetTop, n = 0;
    while (n < list.length && list[n].offsetTop === top) n += 1;
    return Math.max(1, n);
  }

  function focusCard(node) {
    cards.forEach(function (other) { other.tabIndex = -1; });
    node.tabIndex = 0;
    node.focus();
  }

  cardsNode.addEventListener("keydown", function (event) {
    var node = event.target.closest ? event.target.closest(".card") : null;
    if (!node || event.altKey || event.ctrlKey || event.metaKey) return;
    var list = visibleCards(), at = list.indexOf(node), step = 0;
    if (at < 0) return;
    switch (event.key) {
      case "ArrowRight": case "j": step = 1; break;
      case "ArrowLeft": case "k": step = -1; break;
      case "ArrowDown": step = columns(list); break;
      case "ArrowUp": step = -columns(list); break;
      case "Home": step = -at; break;
      case "End": step = list.length - 1 - at; break;
      default: return;
    }
    event.preventDefault();
    focusCard(list[Math.max(0, Math.min(list.length - 1, at + step))]);
  });

  document.addEventListener("keydown", function (event) {
    var typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
    if (event.key === "/" && !typing && $("view-strata").hidden) {
      event.preventDefault();
      $("f-search").focus();
    } else if (event.key === "Escape" && typing) {
      var current = document.querySelector(".card[tabindex='0']");
      if (current && !current.hidden) current.focus(); else event.target.blur();
    }
  });

  $("filters").addEventListener("input", applyFilters);
  $("filters").addEventListener("change", applyFilters);
  $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  $("filters").addEventListener("reset", function () { setTimeout(applyFilters, 0); });

  /* ---------------------------------------------------------------- strata view */

  function table(caption, head, rows, numeric) {
    var node = el("table", {}, [el("caption", {text: caption})]);
    node.appendChild(el("thead", {}, [el("tr", {}, head.map(function (h, i) {
      return el("th", {scope: "col", className: numeric[i] ? "num" : null, text: h});
    }))]));
    var body = el("tbody");
    rows.forEach(function (row) {
      body.appendChild(el("tr", {}, row.map(function (cell, i) {
        return el(i === 0 ? "th" : "td", {scope: i === 0 ? "row" : null, className: numeric[i] ? "num" : null, text: String(cell)});
      })));
    });
    node.appendChild(body);
    return el("div", {className: "table", tabindex: "0", role: "region", "aria-label": caption}, [node]);
  }

  function pct(n, total) { return total ? (100 * n / total).toFixed(1) + "%" : "-"; }

  function drawStrata() {
    var view = $("view-strata"), s = data.strata;
    view.appendChild(el("h2", {text: "Benchmark strata"}));
    if (!s) {
      view.appendChild(el("p", {text: "This dataset has no benchmark (benchmark/test-*.jsonl)."}));
    } else {
      view.appendChild(el("p", {text: plural(s.images, "image") + ", " + plural(s.questions, "question") + " in " +
        plural(s.strata.length, "stratum", "strata") + " (modality \u00d7 region \u00d7 pathology), counted over the whole benchmark."}));
      if (s.rule) view.appendChild(el("p", {className: "rule"}, [el("strong", {text: "Selection rule: "}), s.rule]));
      var letters = Object.keys(s.letters);
      if (letters.length) {
        view.appendChild(table("Correct letters per multiple-choice slot (25% each expected)", ["Slot", "A", "B", "C", "D", "Questions"],
          letters.map(function (slot) {
            var c = s.letters[slot], total = 0;
            Object.keys(c).forEach(function (k) { total += c[k]; });
            return [slot].concat(["A", "B", "C", "D"].map(function (l) { return (c[l] || 0) + " (" + pct(c[l] || 0, total) + ")"; }), [total]);
          }), [false, true, true, true, true, true]));
      }
      var tasks = {}, order = [];
      Object.keys(s.yes_no).forEach(function (slot) {
        var task = slot.split("_")[0], c = s.yes_no[slot];
        if (!tasks[task]) { tasks[task] = {yes: 0, no: 0, slots: []}; order.push(task); }
        tasks[task].yes += c.yes || 0;
        tasks[task].no += c.no || 0;
        tasks[task].slots.push(slot);
      });
      if (order.length) {
        view.appendChild(table("Yes / no answers of the closed questions, per task (a task's yes and no slots pooled: 50% expected; abnormality follows the abnormal share)",
          ["Task", "Yes", "No", "Yes share", "Slots"],
          order.map(function (task) {
            var t = tasks[task];
            return [task, t.yes, t.no, pct(t.yes, t.yes + t.no), t.slots.join(", ")];
          }), [false, true, true, true, false]));
      }
    }
    if (data.charts && data.charts.length) {
      view.appendChild(el("h2", {text: "Charts (radvqa stats)"}));
      data.charts.forEach(function (chart) {
        view.appendChild(el("figure", {className: "chart"}, [
          el("img", {src: chart.src, alt: "Chart: " + chart.name + " (from the dataset's stats report)", loading: "lazy"}),
          el("figcaption", {text: chart.name})
        ]));
      });
    } else {
      view.appendChild(el("p", {className: "note", text: "No charts: run radvqa stats on the dataset, then rebuild the gallery, to see them here."}));
    }
    if (s) {
      var perRegion = {};
      s.strata.forEach(function (row) { perRegion[row.region] = (perRegion[row.region] || 0) + row.images; });
      view.appendChild(table("Images per stratum", ["Pathology", "Modality", "Region", "Images", "Share of region"],
        s.strata.map(function (row) {
          return [row.pathology + (row.abnormal || /normal/i.test(row.pathology) ? "" : " (normal)"), row.modality, row.region, row.images, pct(row.images, perRegion[row.region])];
        }), [false, false, false, true, true]));
    }
  }

  var tabs = [$("tab-cards"), $("tab-strata")];
  function show(name, focus) {
    tabs.forEach(function (tab) {
      var on = tab.id === "tab-" + name;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) tab.focus();
    });
    writeHash();
  }
  tabs.forEach(function (tab, i) {
    tab.addEventListener("click", function () { show(tab.id.slice(4), false); });
    tab.addEventListener("keydown", function (event) {
      var next = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
      if (!next) return;
      event.preventDefault();
      show(tabs[(i + next + tabs.length) % tabs.length].id.slice(4), true);
    });
  });

  /* ---------------------------------------------------------------- start */

  var title = "radvqa gallery: " + data.dataset;
  document.title = title;
  $("title").textContent = title;
  var classes = {};
  images.forEach(function (image) { classes[classKey(image)] = 1; });
  $("summary").textContent = plural(images.length, "image") + " from " + plural(Object.keys(classes).length, "class", "classes") +
    " (" + data.splits.join(", ") + "; up to " + data.per_class + " per class and split" +
    (data.benchmark_all ? ", every benchmark image" : "") + ", seed " + data.seed + ").";
  drawStrata();
  var view = readHash();
  applyFilters();
  show(view === "strata" ? "strata" : "cards", false);
  document.documentElement.setAttribute("data-ready", "true");
})();
