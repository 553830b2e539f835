"""Tests for full text (aggregator.fulltext): decoding article pages, extracting the article,
deciding which items need their page, and the quality gate.

The pages are hand-written (tests/pages/, realistic: navigation, share buttons, popular and
related lists, comments, footer). What must be kept and what must not comes from
tests/pages/pages.json, read with BeautifulSoup selectors over the page itself, never from
our extractor. Encodings are checked against Python's codec for the encoding the bytes were
written in. No network: page URLs are only base URLs.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.fulltext import (
    Extracted,
    Verdict,
    check_selector,
    decode_page,
    extract,
    gate,
    matches,
    should_fetch,
)
from aggregator.text import html_to_text

PAGES = Path(__file__).parent / "pages"
TRUTH = {name: spec for name, spec in json.loads((PAGES / "pages.json").read_text("utf-8")).items()
         if not name.startswith("_")}
ARTICLES = sorted(TRUTH)
OTHER_URL = "https://www.example.cn/news/2024/0521/88231.html"


def squeeze(text: str) -> str:
    """Text without whitespace: extractors differ in the spaces and line breaks they keep."""
    return "".join(text.split())


@cache
def page_html(name: str) -> str:
    """The page as text, decoded with Python's codec for what it was written in."""
    return (PAGES / name).read_bytes().decode("gbk" if "gbk" in name else "utf-8")


@cache
def extracted(name: str) -> Extracted:
    spec = TRUTH.get(name, {"url": OTHER_URL})
    found = extract(page_html(name), spec["url"])
    assert found is not None
    return found


def body_blocks(name: str) -> list[str]:
    soup = BeautifulSoup(page_html(name), "lxml")
    return [s for e in soup.select(TRUTH[name]["body"]) if (s := squeeze(e.get_text()))]


def chrome_strings(name: str) -> list[str]:
    """Every text of the page's chrome of 4+ characters (shorter ones, like 首页, also
    occur in bodies), less those the body itself contains."""
    soup = BeautifulSoup(page_html(name), "lxml")
    body = "".join(body_blocks(name))
    found = {squeeze(s) for e in soup.select(TRUTH[name]["junk"]) for s in e.find_all(string=True)
             if s.parent.name not in ("script", "style")}
    return sorted(s for s in found if len(s) >= 4 and s not in body)


def first_paragraph(name: str, chars: int = 80) -> str:
    soup = BeautifulSoup(page_html(name), "lxml")
    return soup.select(TRUTH[name]["body"])[0].get_text().strip()[:chars] + "…"


# --- extraction from realistic pages ---------------------------------------------------

@pytest.mark.parametrize("name", ARTICLES)
def test_every_body_paragraph_is_kept(name):
    blocks = body_blocks(name)
    assert len(blocks) >= 5
    text = squeeze(extracted(name).text)
    missing = [b for b in blocks if b not in text]
    assert not missing


@pytest.mark.parametrize("name", ARTICLES)
def test_no_navigation_sidebar_comments_or_footer(name):
    junk = chrome_strings(name)
    assert len(junk) >= 15  # the page really has chrome to leave out
    text = squeeze(extracted(name).text)
    kept = [j for j in junk if j in text]
    assert not kept


@pytest.mark.parametrize("name", [n for n in ARTICLES if TRUTH[n]["image"]])
def test_images_resolved_against_the_page_url(name):
    html = extracted(name).html
    assert f'src="{TRUTH[name]["image"]}"'.replace("&", "&amp;") in html
    for src in BeautifulSoup(html, "lxml").select("img"):
        assert src["src"].startswith(("https://", "http://"))


def test_the_output_is_clean_html():
    for name in ARTICLES:
        soup = BeautifulSoup(extracted(name).html, "lxml")
        assert not soup.select("script, style, form, button, [style], [class], [onclick]"), name


def test_wechat_body_by_its_site_rule_with_lazy_images():
    found = extracted("wechat-like.html")
    assert found.method == "site rule"
    sources = [img["src"] for img in BeautifulSoup(found.html, "lxml").select("img")]
    # both data-src images, neither the inline SVG placeholder of the first
    assert sources == ["https://mmbiz.qpic.example.cn/mmbiz_png/AbCdEf0123/640?wx_fmt=png&from=appmsg",
                       "https://mmbiz.qpic.example.cn/mmbiz_jpg/AbCdEf0456/640?wx_fmt=jpeg"]
    headings = [h.get_text() for h in BeautifulSoup(found.html, "lxml").select("h2")]
    assert headings == ["一、怎么开户？", "二、每年存多少？", "三、钱可以买什么？", "四、什么时候能取？"]


def test_wechat_layout_elsewhere_goes_to_the_library():
    found = extract(page_html("wechat-like.html"), "https://mirror.example.org/s/Xq7RkD0a")
    assert found is not None and found.method == "trafilatura"


def test_code_blocks_keep_their_lines_and_inline_code_stays_inline():
    soup = BeautifulSoup(extracted("blog-code.html").html, "lxml")
    page = BeautifulSoup(page_html("blog-code.html"), "lxml")
    blocks = [pre.get_text() for pre in soup.select("pre")]
    assert blocks == [pre.get_text() for pre in page.select(".entry-content pre")]
    assert "FROM orders\nWHERE region = 'north'\n" in blocks[0]
    inline = soup.find("code", string="orders(region)")
    assert inline is not None and inline.parent.name == "p"
    assert not soup.select("pre pre, p pre")


def test_the_headline_is_not_repeated_in_the_body():
    for name in ("news-en.html", "blog-code.html"):
        headline = BeautifulSoup(page_html(name), "lxml").h1.get_text()
        assert headline not in extracted(name).text


def test_chrome_words_on_the_articles_own_wrappers_do_not_remove_it():
    # ASP.NET wraps whole pages in a <form>; WordPress themes put tag-* classes on the
    # post's wrapper. Both are chrome words, on ancestors of the article body.
    name = "news-en.html"
    page = page_html(name).replace("<body>", '<body><form id="form1" method="post" action="./article.aspx">')
    page = page.replace("</body>", "</form></body>").replace('<div class="story__body">',
                                                             '<div class="story__body post tag-transportation">')
    text = squeeze(extract(page, TRUTH[name]["url"]).text)
    assert all(block in text for block in body_blocks(name))


@pytest.mark.parametrize("page", ["", "   \n "])
def test_an_empty_page_gives_nothing(page):
    assert extract(page, OTHER_URL) is None


# --- content_selector and remove_selectors ---------------------------------------------

def test_content_selector_with_remove_selectors():
    name = "news-zh-utf8.html"
    found = extract(page_html(name), TRUTH[name]["url"], content_selector="#ArticleBody",
                    remove_selectors=(".editor", ".pic-desc"))
    assert found is not None and found.method == "selector"
    text = squeeze(found.text)
    assert all(block in text for block in body_blocks(name))
    assert "责任编辑" not in text and "记者陈思远摄" not in text
    assert f'src="{TRUTH[name]["image"]}"' in found.html
    # the same selector without removals keeps them: the removal did the work
    assert "责任编辑" in extract(page_html(name), TRUTH[name]["url"], content_selector="#ArticleBody").text


def test_content_selector_takes_every_match_in_order_and_nested_ones_once():
    name = "news-en.html"
    blocks = body_blocks(name)
    found = extract(page_html(name), TRUTH[name]["url"], content_selector=".story__body > p")
    assert [squeeze(p.get_text()) for p in BeautifulSoup(found.html, "lxml").select("p")] == blocks
    both = extract(page_html(name), TRUTH[name]["url"], content_selector=".story__body, .story__body > p")
    assert squeeze(both.text).count(blocks[0]) == 1


def test_remove_selectors_apply_to_the_library_path_too():
    name = "news-en.html"
    dek = "will add protected lanes on six major corridors by 2027"
    assert dek in extracted(name).text
    found = extract(page_html(name), TRUTH[name]["url"], remove_selectors=(".story__dek",))
    assert found.method == "trafilatura" and dek not in found.text


def test_a_selector_that_matches_nothing_extracts_nothing():
    name = "news-en.html"
    found = extract(page_html(name), TRUTH[name]["url"], content_selector="#no-such-element")
    assert found is not None and found.html == "" and found.text == ""
    assert gate(found, title="Council approves", summary="", page_status=200) == Verdict(False, "nothing extracted")


def test_invalid_selectors():
    assert check_selector("div.article > p:not(.ad)") is None
    assert check_selector("div[") is not None
    with pytest.raises(ValueError, match="invalid CSS selector"):
        extract(page_html("news-en.html"), OTHER_URL, content_selector="div[")
    with pytest.raises(ValueError, match="invalid CSS selector"):
        extract(page_html("news-en.html"), OTHER_URL, remove_selectors=(">>",))


# --- decode_page -----------------------------------------------------------------------

GBK_BYTES = (PAGES / "news-zh-gbk.html").read_bytes()
GBK_TEXT = GBK_BYTES.decode("gbk")
UTF8_BYTES = (PAGES / "news-zh-utf8.html").read_bytes()


def test_the_gbk_page_really_is_gbk():
    with pytest.raises(UnicodeDecodeError):
        GBK_BYTES.decode("utf-8")
    assert b'<meta charset="gbk">' in GBK_BYTES


@pytest.mark.parametrize("content_type", [None, "text/html", "text/html; charset=GBK", 'text/html;charset="gb2312"',
                                          "text/html; charset=utf-8"])
def test_gbk_page_decodes(content_type):
    # None / no charset: the meta; GBK / GB2312: the header (as GB18030, their superset);
    # UTF-8: a header the bytes cannot be, so the meta is asked next
    assert decode_page(GBK_BYTES, content_type) == GBK_TEXT


def test_gbk_page_without_any_declaration_is_sniffed():
    bare = GBK_BYTES.replace(b'<meta charset="gbk">', b"")
    assert decode_page(bare, "text/html") == bare.decode("gbk")


def test_meta_http_equiv_and_a_commented_out_meta():
    page = GBK_BYTES.replace(b'<meta charset="gbk">',
                             b'<!-- <meta charset="big5"> -->'
                             b'<meta http-equiv="Content-Type" content="text/html; charset=gb2312">')
    assert decode_page(page, None) == page.decode("gb18030")


def test_the_header_wins_over_a_stale_meta():
    stale = UTF8_BYTES.replace(b'<meta charset="utf-8">', b'<meta charset="gbk">')
    assert decode_page(stale, "text/html; charset=utf-8") == stale.decode("utf-8")


def test_the_meta_is_used_only_when_the_header_names_no_charset():
    # GBK bytes that Big5 also reads, without an error, as other characters
    page = '<html><head><meta charset="big5"></head><body><p>中文新闻：古镇保护条例施行</p></body></html>'.encode("gbk")
    assert decode_page(page, "text/html; charset=gbk") == page.decode("gbk")
    assert decode_page(page, "text/html") == page.decode("big5") != page.decode("gbk")
    assert decode_page(page, None) == page.decode("big5")


def test_big5_page():
    text = ('<html><head><meta charset="big5"><title>臺灣新聞</title></head>'
            "<body><p>颱風過境，臺北市停班停課。</p></body></html>")
    assert decode_page(text.encode("big5"), None) == text
    assert decode_page(text.encode("cp950"), "text/html; charset=big5") == text


def test_bom_wins_and_latin1_labelled_utf8_is_utf8():
    assert decode_page(b"\xef\xbb\xbf" + UTF8_BYTES, "text/html; charset=gbk") == UTF8_BYTES.decode("utf-8")
    assert decode_page(UTF8_BYTES, "text/html; charset=ISO-8859-1") == UTF8_BYTES.decode("utf-8")
    assert decode_page("<p>café</p>".encode("cp1252"), "text/html; charset=iso-8859-1") == "<p>café</p>"


def test_a_stray_bad_byte_keeps_the_declared_encoding():
    broken = GBK_BYTES.replace("古镇保护".encode("gbk"), "古镇保护".encode("gbk") + b"\xff", 1)
    decoded = decode_page(broken, "text/html; charset=gbk")
    assert "古镇保护\ufffd" in decoded and "核心区禁止新建高层建筑" in decoded


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.one_of(st.none(), st.text(max_size=40)))
def test_decode_page_never_raises(body, content_type):
    assert isinstance(decode_page(body, content_type), str)


# --- gate ------------------------------------------------------------------------------

def article(text: str, **page) -> Extracted:
    return Extracted(html=f"<p>{text}</p>", text=text, method="trafilatura", **page)


@pytest.mark.parametrize("name", ARTICLES)
def test_a_good_page_is_kept(name):
    found = extracted(name)
    verdict = gate(found, title="", summary=first_paragraph(name), page_status=200)
    assert verdict == Verdict(True, f"kept: {len(found.text):,} chars")


@pytest.mark.parametrize("name", ARTICLES)
def test_a_good_page_is_kept_on_its_title_alone(name):
    title = BeautifulSoup(page_html(name), "lxml").title.get_text()  # with the site's name
    assert gate(extracted(name), title=title, summary="", page_status=200).use


def test_chrome_that_looks_like_a_wall_does_not_stop_a_good_page():
    # the comment forms say 请登录后发表评论 and 验证码, the top bar 登录: page-wide words
    assert "请登录后发表评论" in extracted("news-zh-utf8.html").page_text
    assert "验证码" in extracted("news-zh-gbk.html").page_text
    for name in ("news-zh-utf8.html", "news-zh-gbk.html"):
        assert gate(extracted(name), title="", summary=first_paragraph(name), page_status=200).use


def test_login_wall():
    found = extracted("login-wall.html")
    teaser = "记者获悉，近期已有至少七家券商下调融资融券利率，部分中小券商的执行利率已降至4%以下。"
    assert gate(found, title="独家：多家券商下调两融利率", summary=teaser, page_status=200) == \
        Verdict(False, "login wall (请登录)")


def test_login_wall_after_a_long_teaser():
    teaser = "本市今年将新建改建公园绿地一百处，" * 40
    long_wall = article(teaser + "订阅会员，登录后阅读全文")
    assert gate(long_wall, title="", summary=teaser[:60], page_status=200) == Verdict(False, "login wall (登录后阅读)")
    english = article("The council voted on the plan late on Tuesday night. " * 12
                      + "Subscribe to read the full story.")
    assert gate(english, title="", summary="", page_status=200) == Verdict(False, "login wall (subscribe to read)")


@pytest.mark.parametrize("status", [404, 410, 500])
def test_http_errors(status):
    assert gate(extracted("not-found.html"), title="x", summary="y", page_status=status) == \
        Verdict(False, f"HTTP {status}")


def test_a_not_found_page_served_as_200():
    verdict = gate(extracted("not-found.html"), title="本市启动老旧小区加装电梯三年行动", summary="", page_status=200)
    assert not verdict.use and verdict.reason.startswith("not found page (")
    soft = article("抱歉，您访问的页面不存在。该页面可能已被删除。", page_title="滨江日报网")
    assert gate(soft, title="", summary="", page_status=200) == Verdict(False, "not found page (页面不存在)")
    bare = article("Sorry, we could not find that.", page_title="404 | The Riverton Ledger")
    assert gate(bare, title="", summary="", page_status=200) == Verdict(False, "not found page (404)")


def test_an_article_about_404_or_not_found_things_is_kept():
    text = ("The search for the missing hiker was called off on Friday after 404 volunteers combed the ridge. "
            "The cause of the fire was not found either, officials said. ") * 4
    found = article(text, page_title="404 volunteers search the ridge; cause not found")
    assert gate(found, title="", summary=text[:80], page_status=200) == Verdict(True, f"kept: {len(text):,} chars")


def test_cloudflare_challenge():
    found = extracted("cloudflare.html")
    assert "cf-browser-verification" in found.markers
    assert gate(found, title="Council approves 40-mile protected bike lane network", summary="",
                page_status=200) == Verdict(False, "Cloudflare challenge")
    assert gate(found, title="x", summary="", page_status=403) == Verdict(False, "HTTP 403")
    by_title = article("", page_title="Just a moment...")
    assert gate(by_title, title="", summary="", page_status=200) == Verdict(False, "Cloudflare challenge")


def test_captcha():
    wechat = article("环境异常 当前环境异常，完成验证后即可继续访问。 去验证", page_title="")
    assert gate(wechat, title="", summary="", page_status=200) == Verdict(False, "captcha")
    widget = article("Please wait.", markers=("g-recaptcha",))
    assert gate(widget, title="", summary="", page_status=200) == Verdict(False, "captcha")
    text = article("", page_text="Verify you are human by completing the action below.")
    assert gate(text, title="", summary="", page_status=200) == Verdict(False, "captcha")


def test_nothing_and_too_short():
    assert gate(None, title="t", summary="s", page_status=200) == Verdict(False, "nothing extracted")
    assert gate(article(""), title="t", summary="", page_status=200) == Verdict(False, "nothing extracted")
    short = "市住房和城乡建设局发布老旧小区加装电梯三年行动方案。" * 4  # 26 x 4 characters
    assert gate(article(short), title="", summary="", page_status=200) == Verdict(False, "too short (104 chars)")


def test_shorter_than_the_items_own_text():
    own = "<p>" + "The council voted on the plan late on Tuesday night after a long debate. " * 10 + "</p>"
    page = article(html_to_text(own)[:500])
    assert gate(page, title="", summary=own, page_status=200) == \
        Verdict(False, f"shorter than the item's own text (500 < {len(html_to_text(own)):,} chars)")


def test_a_page_that_is_not_the_summarized_article():
    verdict = gate(extracted("news-en.html"), title="", summary=first_paragraph("blog-code.html"), page_status=200)
    assert verdict == Verdict(False, "does not match the summary")
    zh = gate(extracted("news-zh-utf8.html"), title="", summary=first_paragraph("news-zh-gbk.html"), page_status=200)
    assert zh == Verdict(False, "does not match the summary")
    by_title = gate(extracted("news-zh-gbk.html"), title="一文读懂：个人养老金账户怎么开、怎么存、怎么取", summary="",
                    page_status=200)
    assert by_title == Verdict(False, "does not match the title")


def test_matching_a_summary():
    text = extracted("news-en.html").text
    # the opening, cut, with different whitespace and punctuation
    assert matches(text, title="", summary="After more than nine hours of public comment that stretched "
                                            "past midnight, the Riverton City…")
    # an editor's summary that quotes nothing
    assert matches(text, title="", summary="Riverton council votes 7-2 for protected bike lanes on Main Street, "
                                           "Harbor Avenue and Old Mill Road; parking spaces removed")
    assert not matches(text, title="", summary="Riverton Rapids clinch their first playoff berth since 2011 "
                                               "after a dramatic overtime win on Sunday night")
    assert matches(text, title="", summary="")  # nothing to compare with


def test_a_teaser_summary_is_rescued_by_a_close_title():
    text = extracted("news-en.html").text
    teaser = "Our reporter spent a long evening at City Hall so that you would not have to."
    assert not matches(text, title="", summary=teaser)
    assert matches(text, title="Council approves 40-mile protected bike lane network after marathon session",
                   summary=teaser)
    assert not matches(text, title="Riverton Rapids clinch first playoff berth since 2011", summary=teaser)


# --- should_fetch ----------------------------------------------------------------------

LONG_ZH = "<p>" + "市住房和城乡建设局昨日召开新闻发布会，正式发布老旧小区加装电梯三年行动方案。" * 6 + "</p>"
LONG_EN = "<p>" + "The council voted 7-2 early Wednesday to build a network of protected bike lanes. " * 4 + "</p>"


def test_long_items_are_not_fetched_in_auto_mode():
    assert len(html_to_text(LONG_ZH)) >= 200 and len(html_to_text(LONG_EN)) >= 200
    assert not should_fetch(LONG_ZH, "加装电梯", "auto")
    assert not should_fetch(LONG_EN, "Bike lanes", "auto")


def test_modes_never_and_always():
    assert not should_fetch("", "t", "never")
    assert should_fetch(LONG_EN, "t", "always")
    with pytest.raises(ValueError, match="fulltext mode"):
        should_fetch(LONG_EN, "t", "sometimes")


def test_short_items_counted_per_character():
    assert should_fetch("<p>" + "字" * 199 + "</p>", "", "auto")
    assert not should_fetch("<p>" + "字" * 200 + "</p>", "", "auto")
    assert should_fetch("", "A title", "auto")
    assert should_fetch("<p><img src='https://example.org/a.jpg'></p>", "", "auto")


def test_a_repeated_title_is_not_the_items_text():
    title = "本市启动老旧小区加装电梯三年行动，首批一百二十个小区年内开工"
    body = "<p>" + "字" * 190 + "</p>"
    assert should_fetch(f"<h1>{title}</h1>{body}", title, "auto")
    assert not should_fetch(f"<h1>{title}</h1>{body}", "另一个标题", "auto")


@pytest.mark.parametrize("ending", [
    "…", "...", " […]", " [&#8230;]", " [...]", "……阅读全文", " 查看全文>>", " Read more »", "Continue reading →",
    ' <a href="https://example.org/p/1">Read more</a>', ' <a href="/p/1">阅读全文</a>',
    '… <a class="more-link" href="/p/1">Continue reading<span class="screen-reader-text"> “Bike lanes”</span></a>',
    ' Continue reading <a href="/p/1">Bike lanes on Main Street</a>',
    ' […]</p><p>The post <a href="/p/1">Bike lanes</a> appeared first on <a href="/">Riverton Ledger</a>.',
])
def test_truncated_items_are_fetched(ending):
    content = LONG_EN.removesuffix("</p>") + ending + "</p>"
    assert should_fetch(content, "Bike lanes", "auto")
    assert not should_fetch(content, "Bike lanes", "never")


@pytest.mark.parametrize("ending", [".", "。", "!", " Read more about the plan at the city's website.",
                                    ' <a href="/p/2">Fifth Street bike lane results</a>.'])
def test_complete_items_are_not_fetched(ending):
    assert not should_fetch(LONG_EN.removesuffix("</p>") + ending + "</p>", "Bike lanes", "auto")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.text(max_size=30))
def test_should_fetch_never_raises(content, title):
    assert isinstance(should_fetch(content, title, "auto"), bool)
