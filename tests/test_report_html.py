"""index.html of a real test run: self-contained, every link resolves, every image listed with the CSV's numbers."""
from __future__ import annotations

import csv
from html.parser import HTMLParser
from urllib.parse import unquote

import pytest
from test_report_support import test_run, tiny_weights
from test_train_support import DEMO_PHOTOS, write_photos

pytestmark = pytest.mark.slow


class PageParser(HTMLParser):
    """Collects links, image sources, scripts with a src, and the per-image rows with their cells."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.external_scripts = [], [], []
        self.rows: dict[str, list[tuple[dict, str]]] = {}
        self.row, self.cell = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ('a', 'link') and 'href' in attrs:
            self.links.append(attrs['href'])
        if tag == 'img':
            self.images.append(attrs['src'])
        if tag == 'script' and 'src' in attrs:
            self.external_scripts.append(attrs['src'])
        if tag == 'tr' and 'data-image' in attrs:
            self.row = self.rows.setdefault(attrs['data-image'], [])
        if tag == 'td' and self.row is not None:
            self.cell = [attrs, '']
            self.row.append(self.cell)

    def handle_endtag(self, tag):
        if tag == 'tr':
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp('root')
    photos = write_photos(root / 'photos', 64, ('astronaut', 'coffee', 'rocket'))
    return test_run(root, 'tiny', tiny_weights(root / 'tiny.pth', seed=3),
                    [('demo_val', DEMO_PHOTOS / 'val'), ('photos', photos)])


def test_page_links_resolve_and_rows_equal_the_csv(results):
    text = (results / 'index.html').read_text()
    assert 'http://' not in text and 'https://' not in text
    page = PageParser()
    page.feed(text)
    assert not page.external_scripts and '<script>' in text
    for target in page.links + page.images:
        if not target.startswith('#'):
            assert (results / unquote(target)).is_file(), target
    for dataset in ('demo_val', 'photos'):
        with open(results / f'metrics_{dataset}.csv', newline='') as handle:
            expected = list(csv.DictReader(handle))[:-1]
        for row in expected:
            cells = page.rows.pop(row['image'])
            numbers = [(attrs['data-value'], shown) for attrs, shown in cells if 'data-value' in attrs]
            assert numbers == [(row[name], f'{float(row[name]):.4f}') for name in ('psnr', 'ssim')]
            assert f'{row["width"]}x{row["height"]}' in [shown for _, shown in cells]
    assert page.rows == {}
    thumbs = [src for src in page.images if src.startswith('thumbs/')]
    sr = [src for src in page.images if src.startswith('visualization/')]
    ground_truth = [src for src in page.images if src.endswith(('chelsea.png', 'coins.png', 'photos/coffee.png'))]
    assert len(thumbs) == len(sr) == 5 and len(ground_truth) == 3
    assert 'class="slide"' in text and 'data-col="3"' in text
