// hallbox pages: shared helpers. Plain browser JavaScript, no build step, no third-party code.
"use strict";

const HB = (() => {
  // Problem codes (RFC 9457 `type` urn:hallbox:problem:CODE) in the hall's language.
  const PROBLEMS = {
    "empty-notice": "公告内容不能为空",
    "unknown-window": "没有这个窗口",
    "service-closed": "该业务当前不在办理时间",
    "daily-cap-reached": "该业务今日号源已取完",
    "day-not-open": "今日尚未开始营业",
    "already-logged-in": "该工作人员已在其他窗口登录",
    "already-paused": "窗口已处于暂停状态",
    "already-requested": "已请求评价，请等待办事人评价",
    "appointment-used": "该预约码已签到",
    "duplicate-appointment": "预约码重复",
    "illegal-transition": "当前号码状态不允许此操作",
    "no-current-ticket": "当前没有正在呼叫或办理的号码",
    "not-paused": "窗口未暂停",
    "not-served-here": "该号码不在本窗口办理",
    "nothing-to-rate": "没有可评价的办件",
    "ratings-off": "本厅未启用服务评价",
    "reactivate-expired": "过号已超过可恢复时间，请重新取号",
    "recall-cap": "重呼次数已达上限",
    "service-not-at-window": "本窗口不办理该业务",
    "ticket-in-hand": "请先办结或处理当前号码",
    "too-early": "未到预约签到时间，请稍后再来",
    "too-late": "已超过预约签到时间，请重新取号",
    "window-not-logged-in": "窗口未登录",
    "window-paused": "窗口暂停服务中，请先恢复",
    "window-taken": "该窗口已有其他工作人员登录",
    "not-your-window": "无权操作其他窗口",
    "served-by-someone-else": "该号码正由其他工作人员办理",
    "window-not-allowed": "您无权在该窗口登录",
    "appointment-needs-check-in": "预约号请先签到",
    "bad-idempotency-key": "请求标识无效，请重试",
    "bad-slot": "预约时段无效",
    "reason-required": "请选择原因",
    "same-service": "不能转移到相同业务",
    "slot-in-past": "预约时段已过",
    "unknown-level": "未知的评价等级",
    "unknown-appointment": "预约码不存在，请核对后重新输入",
    "unknown-service": "业务不存在",
    "unknown-staff": "工号不存在",
    "unknown-ticket": "号码不存在",
    "unknown-window": "窗口不存在",
    "unauthorized": "身份验证失败，请重新登录",
    "forbidden": "无权进行此操作",
    "validation": "输入内容有误，请检查",
    "not-found": "未找到",
    "sensor-timeout": "指纹仪无响应",
    "finger-timeout": "未检测到手指，请重试",
    "sensor-offline": "指纹仪离线",
    "unknown-staff-finger": "指纹未登记",
  };

  function problemText(status, body) {
    const code = body && typeof body.type === "string" ? body.type.split(":").pop() : "";
    if (status === 401 && body && /PIN/.test(body.detail || "")) return "工号或密码错误";
    if (PROBLEMS[code]) return PROBLEMS[code];
    if (status === 429) return "操作过于频繁，请稍后再试";
    if (status === 413) return "内容过大";
    if (status >= 500) return "系统繁忙，请稍后再试";
    return (body && body.detail) ? `操作未成功（${body.detail}）` : `操作未成功（${status}）`;
  }

  // Idempotency keys from getRandomValues: crypto.randomUUID exists only on secure origins,
  // and a hall opens the box at http://<LAN address>.
  function newKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (opts.token) headers["authorization"] = "Bearer " + opts.token;
    let body;
    if (opts.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), opts.timeoutMs || 10000);
    try {
      const r = await fetch(path, {method: opts.method || "GET", headers, body, signal: ctl.signal,
                                   cache: "no-store"});
      let data = null;
      const type = r.headers.get("content-type") || "";
      if (type.includes("json")) data = await r.json();
      return {ok: r.ok, status: r.status, data,
              message: r.ok ? "" : problemText(r.status, data)};
    } catch (err) {
      return {ok: false, status: 0, data: null, network: true, message: "网络连接中断，请稍后再试"};
    } finally {
      clearTimeout(timer);
    }
  }

  // Server-sent events with our own reconnect and backoff (1 s doubling to 30 s): EventSource
  // alone gives up after a failed reconnect (an HTTP error while the box restarts).
  function stream(url, handlers, onState) {
    let es = null, delay = 1000, timer = null, closed = false;
    const open = () => {
      if (closed) return;
      es = new EventSource(url);
      es.onopen = () => { delay = 1000; onState && onState(true); };
      for (const [name, fn] of Object.entries(handlers)) {
        es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
      }
      es.onerror = () => {
        es.close();
        onState && onState(false);
        clearTimeout(timer);
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    };
    open();
    return {close() { closed = true; clearTimeout(timer); es && es.close(); }};
  }

  function fmtWait(ms) {
    if (ms == null) return "—";
    if (ms < 60000) return "不到1分钟";
    const m = Math.round(ms / 60000);
    return m < 60 ? `约${m}分钟` : `约${Math.floor(m / 60)}小时${m % 60 ? (m % 60) + "分钟" : ""}`;
  }

  function fmtDur(ms) {
    if (ms == null) return "—";
    const s = Math.round(ms / 1000);
    return s < 60 ? `${s}秒` : `${Math.floor(s / 60)}分${String(s % 60).padStart(2, "0")}秒`;
  }

  const WEEK = "日一二三四五六";
  function clock(el, withDate = true) {
    const tick = () => {
      const d = new Date();
      const t = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
      el.textContent = withDate
        ? `${d.getFullYear()}年${d.getMonth() + 1}月${d.getDate()}日 星期${WEEK[d.getDay()]} ${t}` : t;
    };
    tick();
    setInterval(tick, 10000);
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const store = {
    get(k) { try { return JSON.parse(localStorage.getItem("hallbox." + k)); } catch { return null; } },
    set(k, v) { localStorage.setItem("hallbox." + k, JSON.stringify(v)); },
    del(k) { localStorage.removeItem("hallbox." + k); },
  };

  return {PROBLEMS, problemText, newKey, api, stream, fmtWait, fmtDur, clock, el, store};
})();
