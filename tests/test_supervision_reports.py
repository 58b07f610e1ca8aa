"""A month rolled into its summary (月汇总), checked cell by cell in the XLSX; the report and
statistics API refusing bad input with pointers and changing nothing."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from edge.api.app import create_app
from edge.assembly import HallServices
from edge.clock import FakeClock
from edge.config import HallConfig
from edge.domain.rating import Level, Submission
from edge.runtime import HallRuntime
from tests.floor_supervision_fixtures import *  # noqa: F403  (fixtures)
from tests.floor_supervision_fixtures import at, check_schemas, journal, punch, rate, services_for

MANAGER = {"authorization": "Bearer demo-manager-token"}
CENTRAL = {"authorization": "Bearer demo-central-token"}
KIOSK = {"authorization": "Bearer demo-kiosk-token"}


@pytest.fixture
def november(sup_config: HallConfig, tmp_path: Path) -> Iterator[HallRuntime]:
    """A box that ran all of November 2026: S001 with a late day, a day of missing noon
    punches, two days' leave and an absence; S007 (own schedule) always on time."""
    rt = HallRuntime.open(sup_config, tmp_path / "data", clock=FakeClock(at(1, 7, 0)))
    rt.tick()
    services = services_for(rt)
    svc = services.supervision
    assert svc is not None
    d = date(2026, 11, 1)
    while d.month == 11:
        if svc.rules.is_workday("S001", d):
            s1 = {3: [(8, 40), (12, 2), (13, 25), (17, 31)], 5: [(8, 20), (17, 40)],
                  10: [], 11: [], 20: []}.get(d.day, [(8, 20), (12, 2), (13, 25), (17, 31)])
            for hh, mm in [(7, 55), (12, 0), (13, 0), (17, 0)]:
                punch(rt, "S007", at(d.day, hh, mm))
            for hh, mm in s1:
                punch(rt, "S001", at(d.day, hh, mm))
        rt.clock.set(at(d.day, 23, 0))  # type: ignore[attr-defined]
        svc.tick()
        d += timedelta(days=1)
    rt.clock.set(at(1, 9, 0, month=12))  # type: ignore[attr-defined]
    rt.tick()
    yield rt, services
    rt.close()


S001 = ["S001", "王芳", "区民政局", 21, 18, 16, 1, 10, 0, 0, 2, 1, 2, 94.74]
S002 = ["S002", "李娜", "区医保局", 21, 0, 0, 0, 0, 0, 0, 0, 21, 0, 0.0]
S007 = ["S007", "赵敏", "区政务服务中心", 21, 21, 21, 0, 0, 0, 0, 0, 0, 0, 100.0]


def test_month_summary_cell_by_cell(november: tuple[HallRuntime, HallServices]) -> None:
    rt, services = november
    with TestClient(create_app(rt, services), base_url="http://127.0.0.1") as c:
        r = c.post("/api/v1/leaves", headers=MANAGER, json={
            "staff": "S001", "from": "2026-11-10", "to": "2026-11-11", "kind": "事假"})
        assert r.status_code == 201, r.text
        r = c.get("/api/v1/reports/attendance?month=2026-11&format=xlsx", headers=CENTRAL)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
        wb = load_workbook(io.BytesIO(r.content))
        ws = wb["人员汇总"]
        assert ws["A1"].value.endswith("2026-11 考勤月汇总")
        assert [x.value for x in ws[2]] == [
            "工号", "姓名", "部门", "应出勤天数", "实出勤天数", "正常天数", "迟到次数", "迟到分钟",
            "早退次数", "早退分钟", "缺卡次数", "旷工天数", "请假天数", "出勤率(%)"]
        rows = {row[0]: row for row in ws.iter_rows(min_row=3, values_only=True)}
        assert len(rows) == len(rt.config.staff)
        assert list(rows["S001"]) == S001
        assert list(rows["S002"]) == S002
        assert list(rows["S007"]) == S007
        dept = wb["部门汇总"]
        assert [x.value for x in dept[2]][:4] == ["部门", "人数", "应出勤天数", "实出勤天数"]
        drows = {row[0]: list(row) for row in dept.iter_rows(min_row=3, values_only=True)}
        assert drows["区市场监管局"] == ["区市场监管局", 3, 63, 0, 0, 0, 0, 0, 0, 0, 63, 0, 0.0]
        assert drows["区民政局"] == ["区民政局", 1, *S001[3:]]
        detail = {(row[0], row[1]): row for row in
                  wb["每日明细"].iter_rows(min_row=2, values_only=True)}
        assert detail[("S001", "2026-11-03")][3:5] == ("迟到", 10)
        assert detail[("S001", "2026-11-05")][3] == "缺卡"
        assert detail[("S001", "2026-11-10")][3] == "请假"
        assert ("S001", "2026-11-27") not in detail  # the holiday
        assert detail[("S001", "2026-11-28")][3] == "正常"  # the make-up working day

        r = c.get("/api/v1/reports/attendance?month=2026-11&format=csv", headers=MANAGER)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        s1 = next(row for row in table if row[1] == "S001")
        assert s1[0] == "人员" and s1[2:4] == ["王芳", "区民政局"] and s1[-1] == "94.74"

        # The records journalled day by day (corrected by the leave) give the same rate.
        assert services.supervision is not None
        services.supervision.tick()
        st = c.get("/api/v1/stats?from=2026-11-01&to=2026-11-30&by=staff", headers=MANAGER)
        rate = {row["key"]: row["attendance_rate"] for row in st.json()["rows"]}
        assert rate["S001"] == 94.74 and rate["S007"] == 100.0 and rate["S002"] == 0.0
        check_schemas(rt)


def assert_problem(r, status: int, code: str, pointer: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"urn:hallbox:problem:{code}", body
    assert pointer in [e["pointer"] for e in body.get("errors", [])], body


def test_bad_input_is_refused_with_pointer_and_changes_nothing(
        sup_rt: HallRuntime, sup_services: HallServices) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    with TestClient(create_app(rt, sup_services), base_url="http://127.0.0.1") as c:
        head = rt.store.head_seq
        q = "/api/v1/reports/attendance"
        assert_problem(c.get(f"{q}?month=2026-13", headers=MANAGER), 422, "bad-month",
                       "/query/month")
        assert_problem(c.get(f"{q}?month=2027-01", headers=MANAGER), 422, "month-in-future",
                       "/query/month")
        assert_problem(c.get(f"{q}?month=2026-11&format=pdf", headers=MANAGER), 422,
                       "validation", "/query/format")
        assert c.get(f"{q}?month=2026-11", headers=KIOSK).status_code == 403
        s = "/api/v1/stats"
        assert_problem(c.get(f"{s}?from=2025-01-01&to=2026-11-23", headers=MANAGER), 422,
                       "range-too-long", "/query/to")
        assert_problem(c.get(f"{s}?from=2026-11-23&to=2026-11-01", headers=MANAGER), 422,
                       "bad-range", "/query/to")
        assert_problem(c.get(f"{s}?from=2026-13-01&to=2026-11-01", headers=MANAGER), 422,
                       "bad-date", "/query/from")
        assert_problem(c.get(f"{s}?from=2026-11-01&to=2026-11-23&by=hour", headers=MANAGER),
                       422, "bad-dimension", "/query/by")
        ok = c.get(f"{s}?from=2025-11-23&to=2026-11-23&by=day", headers=CENTRAL)
        assert ok.status_code == 200  # exactly a year (366 days) is allowed
        lv = "/api/v1/leaves"
        good = {"staff": "S001", "from": "2026-11-24", "to": "2026-11-24", "kind": "病假"}
        assert_problem(c.post(lv, headers=MANAGER, json={**good, "staff": "S999"}), 404,
                       "unknown-staff", "/body/staff")
        assert_problem(c.post(lv, headers=MANAGER, json={**good, "kind": "旅游"}), 422,
                       "unknown-leave-kind", "/body/kind")
        assert_problem(c.post(lv, headers=MANAGER, json={**good, "to": "2026-11-20"}), 422,
                       "bad-range", "/body/to")
        assert c.post(lv, headers=CENTRAL, json=good).status_code == 403
        sc = "/api/v1/spotchecks"
        future = at(23, 9, 2).isoformat()
        assert_problem(c.post(sc, headers=MANAGER, json={
            "staff": "S001", "deadline": at(23, 8, 59).isoformat()}), 422, "deadline-passed",
            "/body/deadline")
        assert_problem(c.post(sc, headers=MANAGER, json={"staff": "S999", "deadline": future}),
                       404, "unknown-staff", "/body/staff")
        assert_problem(c.post(sc, headers=MANAGER, json={"window": 2, "deadline": future}),
                       409, "no-sensor", "/body/window")
        assert_problem(c.post(sc, headers=MANAGER, json={"window": 99, "deadline": future}),
                       404, "unknown-window", "/body/window")
        assert rt.store.head_seq == head  # nothing journalled by any refusal
        assert c.post(lv, headers=MANAGER, json=good).status_code == 201
        assert journal(rt, "leave.recorded")[0]["data"]["by"] == "manager"


def test_alerts_and_console_prompt_over_http(sup_rt: HallRuntime,
                                             sup_services: HallServices) -> None:
    rt = sup_rt
    rt.clock.set(at(23, 9, 0))  # type: ignore[attr-defined]
    svc = sup_services.supervision
    assert svc is not None
    with TestClient(create_app(rt, sup_services), base_url="http://127.0.0.1") as c:
        r = c.post("/api/v1/sessions", json={"staff_id": "S001", "pin": "8001", "window": 1})
        staff = {"authorization": f"Bearer {r.json()['token']}"}
        rt.execute(lambda h: h.issue("SHMS"))
        for step in ("call-next", "start", "finish"):
            assert c.post(f"/api/v1/windows/1/{step}", headers=staff).status_code == 200
        ratings = sup_services.ratings
        assert ratings is not None
        for _ in range(500):  # the request follows the finish on the app's loop
            if ratings.pending_for(1) is not None:
                break
            time.sleep(0.01)
        rate(rt, sup_services, Submission(1, Level.VERY_DISSATISFIED, "tablet", "eval-w1",
                                          reason="服务态度差"))
        rt.execute(lambda h: h.issue("TZJS"))  # nobody at windows 6 and 7
        rt.clock.advance(minutes=6)  # type: ignore[attr-defined]
        svc.tick()
        alerts = c.get("/api/v1/alerts", headers=staff).json()["alerts"]
        kinds = [(a["kind"], a["level"]) for a in alerts]
        assert kinds[0] == ("bad_rating", "red")  # red first
        assert ("window_unattended", "yellow") in kinds
        bad = alerts[0]
        assert bad["reason"] == "服务态度差" and bad["staff"] == "S001"
        unattended = next(a for a in alerts if a["kind"] == "window_unattended")
        ack = "/api/v1/alerts/{}/acknowledge"
        assert c.post(ack.format(bad["alert"]), headers=staff).status_code == 403
        assert_problem(c.post(ack.format("nope"), headers=MANAGER), 404, "unknown-alert",
                       "/path/alert")
        assert_problem(c.post(ack.format(unattended["alert"]), headers=MANAGER), 409,
                       "alert-is-a-condition", "/path/alert")
        r = c.post(ack.format(bad["alert"]), headers=MANAGER)
        assert r.status_code == 200 and r.json()["by"] == "manager"
        assert "bad_rating" not in [a["kind"] for a in
                                    c.get("/api/v1/alerts", headers=CENTRAL).json()["alerts"]]

        # The console of window 1 sees a running spot check; window 2's staff may not look.
        assert c.get("/api/v1/windows/1/spotcheck", headers=staff).json()["running"] is None
        _, events = svc.spot.start(rt.hall, "SC-t", window=1, staff=None,
                                   deadline=rt.clock.now() + timedelta(minutes=2))
        rt.emit(events)
        running = c.get("/api/v1/windows/1/spotcheck", headers=staff).json()["running"]
        assert running["check"] == "SC-t" and running["staff"] == "S001"
        assert c.get("/api/v1/windows/2/spotcheck", headers=staff).status_code == 403
    check_schemas(rt)
